#!/usr/bin/env node
// The official TypeScript MCP SDK (@modelcontextprotocol/sdk, pinned in package-lock.json) as a
// client of rpa-gateway, for tests/test_mcp_clients.py.  `make test` installs its node_modules.
//
//   node mcp_client.mjs <url> [tool] [jsonArgs] [--auth "Bearer <key>"] [--sse] [--timeout-ms N]
//
// Streamable HTTP by default (<url> is the /mcp endpoint); --sse uses the SDK's legacy
// HTTP+SSE transport (<url> is the /mcp/sse stream).  --auth is sent verbatim as the
// Authorization header on every request.  Prints one JSON object: the negotiated protocol
// version, the session id, the server's info, the tools listed and the call's result, or
// `error`.  Exit codes: 0 done, 1 the call's result says isError, 2 usage, 3 failure.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/sdk/types.js';

const argv = process.argv.slice(2);
function option(name) {
  const at = argv.indexOf(name);
  if (at < 0) return undefined;
  const value = argv[at + 1];
  argv.splice(at, 2);
  return value;
}
function flag(name) {
  const at = argv.indexOf(name);
  if (at < 0) return false;
  argv.splice(at, 1);
  return true;
}

const auth = option('--auth');
const timeout = Number(option('--timeout-ms') ?? 30000);
const legacySse = flag('--sse');
const [url, toolName, jsonArgs = '{}'] = argv;
if (!url) {
  console.error('usage: node mcp_client.mjs <url> [tool] [jsonArgs] [--auth "Bearer <key>"] [--sse]');
  process.exit(2);
}

const headers = auth ? { Authorization: auth } : {};
const transport = legacySse
  ? new SSEClientTransport(new URL(url), { requestInit: { headers }, eventSourceInit: { headers } })
  : new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: 'rpa-gateway-ts-test', version: '0.0.0' }, { capabilities: {} });
const transportErrors = [];
client.onerror = (error) => transportErrors.push(String(error?.message ?? error));

const out = {
  sdkLatestProtocolVersion: LATEST_PROTOCOL_VERSION,
  transport: legacySse ? 'sse' : 'streamable-http',
};
let code = 0;
try {
  await client.connect(transport, { timeout });
  // Both transports keep the version initialize settled (and send it as MCP-Protocol-Version).
  out.negotiatedProtocolVersion = transport.protocolVersion ?? transport._protocolVersion ?? null;
  out.sessionId = transport.sessionId ?? null;
  out.serverInfo = client.getServerVersion() ?? null;
  out.tools = (await client.listTools(undefined, { timeout })).tools;
  if (toolName) {
    out.callResult = await client.callTool(
      { name: toolName, arguments: JSON.parse(jsonArgs) },
      undefined,
      { timeout },
    );
    if (out.callResult.isError) code = 1;
  }
} catch (error) {
  out.error = {
    name: error?.name,
    code: error?.code,
    message: error?.message,
    cause: error?.cause?.code ?? error?.cause?.message,
  };
  code = 3;
}
out.transportErrors = transportErrors;
await client.close().catch(() => {});
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(code);
