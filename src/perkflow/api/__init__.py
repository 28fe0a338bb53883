"""The HTTP API: FastAPI app, error handling and authentication; routers live in the domain folders."""
