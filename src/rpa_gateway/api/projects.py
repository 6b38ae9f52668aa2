"""``GET /rpa/v1/projects``: what the local backend can run."""

from __future__ import annotations

from fastapi import APIRouter, Request

from rpa_gateway.api.auth import Caller
from rpa_gateway.api.components import components
from rpa_gateway.api.errors import RequestRejected
from rpa_gateway.api.openapi_docs import errors
from rpa_gateway.api.views import ProjectList, ProjectView

router = APIRouter(tags=["projects"])


@router.get(
    "/rpa/v1/projects",
    response_model=ProjectList,
    responses=errors(401, 404),
    summary="Projects this service runs (local backend)",
)
async def list_projects(request: Request, _: Caller) -> ProjectList:
    projects = components(request).executions.projects()
    if projects is None:
        raise RequestRejected(
            404, "not_supported", "the astron backend does not list projects; its platform does"
        )
    return ProjectList(
        projects=[
            ProjectView(
                id=p.id,
                name=p.name,
                description=p.description,
                timeout=p.timeout,
                params_schema=p.params_schema,
            )
            for p in projects
        ]
    )
