"""The console's policy pages: the stored versions and what changed between them, and a
candidate taken from validation through tests, a backtest and the shadow to activation.

A candidate is the bundle's files as edited in the page; each step posts them again, so
nothing half-made is kept between steps. Validating, testing and backtesting change nothing
(their results are shown at once); activating, as shadow or for real, changes the workspace
and ends in a redirect. Both need the policy-author role (or admin).
"""

from __future__ import annotations

import difflib
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from tether.catalogue import Catalogue, compile_tool
from tether.errors import InvalidInput, NotFound
from tether.policy.backtest import shadow_disagrees
from tether.policy.testing import run_test_text
from tether.server.console_auth import Person

if TYPE_CHECKING:
    from tether.server.console import Console

DISAGREEMENTS_SCANNED = 1000  # recent decisions looked through for the shadow's disagreements
BACKTEST_WINDOWS = {"1 day": 86400.0, "7 days": 7 * 86400.0, "30 days": 30 * 86400.0}
NEW_FILE = "new_file"  # the form's field for a file added to the candidate


def policies(console: Console, request: Request, person: Person, workspace: str) -> Response:
    return _page(console, request, person, workspace, files=None, outcome=None)


def version(console: Console, request: Request, person: Person, workspace: str) -> Response:
    record = console.guard.store.bundle(workspace, request.path_params["version"])
    if record is None:
        raise NotFound(f"no policy version {request.path_params['version']!r} in {workspace}")
    return console.page(
        "policy_version.html",
        record=record,
        **console.context(request, person, workspace, "policies"),
    )


def diff(console: Console, request: Request, person: Person, workspace: str) -> Response:
    store = console.guard.store
    names = (request.query_params.get("a", ""), request.query_params.get("b", ""))
    old, new = (store.bundle(workspace, name) for name in names)
    if old is None or new is None:
        raise NotFound("choose two stored versions to compare")
    return console.page(
        "policy_diff.html",
        old=old,
        new=new,
        files=_diff(old.files, new.files, names),
        **console.context(request, person, workspace, "policies"),
    )


def candidate(console: Console, request: Request, person: Person, workspace: str) -> Response:
    """Validate, test or backtest the candidate in the form (changing nothing), or activate
    it as shadow or for real."""
    form = request.state.form
    step = form.get("step")
    guard = console.guard
    if step == "stop-shadow":  # the one step without a candidate
        guard.stop_shadow(workspace)
        return console.done("/policies", workspace, "The shadow bundle is stopped.")
    files = _edited(form)
    outcome: dict[str, Any] = {"step": step}
    try:
        files = _files(form)
        if step == "validate":
            bundle = guard.check_policies(workspace, files)
            outcome["version"], outcome["policies"] = bundle.version, len(bundle.policies)
        elif step == "test":
            tools = guard.tools(workspace)
            catalogue = Catalogue({tool.name: compile_tool(tool) for tool in tools})
            outcome["cases"] = run_test_text(
                str(form.get("tests") or ""), files, catalogue, guard.store.agents(workspace),
                workspace,
            )  # fmt: skip
        elif step == "backtest":
            window = BACKTEST_WINDOWS.get(str(form.get("window")), BACKTEST_WINDOWS["7 days"])
            bundle = guard.check_policies(workspace, files)
            outcome["report"] = guard.backtest(workspace, bundle, since=time.time() - window)
        elif step in ("shadow", "activate"):
            made = guard.activate_policies(workspace, files, shadow=step == "shadow")
            said = "shadow" if step == "shadow" else "active"
            return console.done("/policies", workspace, f"Version {made} is now {said}.")
        else:
            raise InvalidInput("choose validate, test, backtest, shadow or activate")
    except InvalidInput as exc:  # policy errors too: shown beside the edits, which are kept
        outcome["problems"] = str(exc)
    return _page(console, request, person, workspace, files=files, outcome=outcome)


def _page(
    console: Console,
    request: Request,
    person: Person,
    workspace: str,
    *,
    files: dict[str, str] | None,
    outcome: dict[str, Any] | None,
) -> Response:
    store = console.guard.store
    current = console.guard.workspace(workspace)
    versions = store.bundles(workspace)
    # The candidate starts as the bundle under evaluation (the shadow's), else the active one.
    starting = current.shadow_policy_version or current.active_policy_version
    start = next((v for v in versions if v.version == starting), None)
    # Only while a shadow runs: its disagreements are what its author is watching for.
    recent = (
        store.decisions(workspace=workspace, limit=DISAGREEMENTS_SCANNED)
        if current.shadow_policy_version
        else []
    )
    return console.page(
        "policies.html",
        versions=versions,
        active=current.active_policy_version,
        shadow=current.shadow_policy_version,
        files=files if files is not None else dict(start.files) if start else {},
        tests=str(request.state.form.get("tests") or "") if files is not None else "",
        outcome=outcome,
        disagreements=[r for r in recent if shadow_disagrees(r)][:50],
        scanned=len(recent),
        windows=list(BACKTEST_WINDOWS),
        can_author=person.can(workspace, "policy-author"),
        **console.context(request, person, workspace, "policies"),
    )


def _edited(form: dict[str, Any]) -> dict[str, str]:
    """The candidate's files as the form has them (`file:<name>` fields), emptied ones left out."""
    return {
        key.removeprefix("file:"): str(value)
        for key, value in form.items()
        if key.startswith("file:") and str(value).strip()
    }


def _files(form: dict[str, Any]) -> dict[str, str]:
    """The candidate: the edited files and the one added, checked."""
    files = _edited(form)
    name = str(form.get(f"{NEW_FILE}_name") or "").strip()
    if name:
        if not name.endswith(".cedar") or "/" in name:
            raise InvalidInput("a new policy file is named like name.cedar")
        files[name] = str(form.get(f"{NEW_FILE}_text") or "")
    if not files:
        raise InvalidInput("the candidate has no policy files")
    return files


def _diff(old: dict[str, str], new: dict[str, str], names: tuple[str, str]) -> list[dict[str, Any]]:
    """Each file's unified diff, with each line's kind for colouring."""
    changed = []
    for name in sorted(set(old) | set(new)):
        lines = list(
            difflib.unified_diff(
                old.get(name, "").splitlines(),
                new.get(name, "").splitlines(),
                f"{names[0]}/{name}",
                f"{names[1]}/{name}",
                lineterm="",
            )
        )
        if lines:
            kinds = [
                "add"
                if line.startswith("+") and not line.startswith("+++")
                else "del"
                if line.startswith("-") and not line.startswith("---")
                else "hunk"
                if line.startswith("@@")
                else ""
                for line in lines
            ]
            changed.append({"name": name, "lines": list(zip(kinds, lines, strict=True))})
    return changed


__all__ = ["candidate", "diff", "policies", "version"]
