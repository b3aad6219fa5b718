"""The client half of the gateway's authentication, for the official MCP Python client: each
HTTP request it makes carries the task's token and a fresh DPoP proof for that request.

    async with streamable_http_client(url, http_client=httpx2.AsyncClient(auth=TaskAuth(task))):

`task` is a task handle (embedded or remote Guard): the token renews itself as it nears expiry,
and the agent's key signs each proof without leaving the process.
"""

from __future__ import annotations

from collections.abc import Generator
from urllib.parse import urlsplit, urlunsplit

import httpx2

from tether.sdk.handle import TaskHandleBase


class TaskAuth(httpx2.Auth):
    def __init__(self, task: TaskHandleBase) -> None:
        self.task = task

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        token = self.task.token
        url = urlsplit(str(request.url))
        endpoint = urlunsplit((url.scheme, url.netloc, url.path, "", ""))
        request.headers["Authorization"] = f"DPoP {token}"
        request.headers["DPoP"] = self.task.proof(request.method, endpoint, token)
        yield request
