"""pkiq's web front end (FastAPI on uvicorn): the public downloads that certificates point
to, each CA's certificate and current CRL, answered with conditional GET. See ``web.app``
for the URLs; ``web.server.run`` serves them."""
