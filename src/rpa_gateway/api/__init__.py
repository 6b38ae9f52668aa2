"""HTTP only: parse requests, call the service, render responses."""
