"""What the server and its workers share: header names, the error body, the Execution
API's bodies, ids, the nesting limit, masking and the one walk over nested values.

Both sides import it, so it imports neither SQLAlchemy nor FastAPI, nor anything of
taskexec outside this package (``make lint`` checks it).
"""
