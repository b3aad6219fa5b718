"""Bundle validation: every problem is found, located (file, line, policy id) and explained."""

from __future__ import annotations

import pytest

from tether import Guard, PolicyError
from tether.errors import PolicyProblem
from tether.model import Effect
from tether.policy.source import split_statements


def problems(guard: Guard, files: dict[str, str]) -> list[PolicyProblem]:
    with pytest.raises(PolicyError) as info:
        guard.activate_policies("acme", files)
    return info.value.problems


def only(found: list[PolicyProblem]) -> PolicyProblem:
    assert len(found) == 1, found
    return found[0]


def test_misspelt_argument_fails_validation_with_position_and_hint(guard: Guard) -> None:
    text = """// mail rules

@id("mail-team")
permit (principal, action == Action::"send_email", resource)
when {
  context.args.subjetc == "hi"
};
"""
    problem = only(problems(guard, {"mail.cedar": text}))
    assert (problem.file, problem.line, problem.policy_id) == ("mail.cedar", 6, "mail-team")
    assert "args.subjetc" in problem.message
    assert "did you mean `subject`?" in problem.message
    assert str(problem).startswith("mail.cedar:6 [mail-team]: ")


def test_unknown_action_names_the_closest_tool(guard: Guard) -> None:
    text = 'permit (principal, action == Action::"send_emial", resource);'
    problem = only(problems(guard, {"p.cedar": text}))
    assert problem.line == 1
    assert 'Action::"send_emial"' in problem.message
    assert "did you mean `send_email`?" in problem.message


def test_type_error_is_reported(guard: Guard) -> None:
    text = (
        '\n\npermit (principal, action == Action::"send_email", resource)\n'
        "when { context.args.to > 3 };"
    )
    problem = only(problems(guard, {"p.cedar": text}))
    assert problem.line == 3
    assert "expected Long but saw String" in problem.message


def test_syntax_error_names_the_statement(guard: Guard) -> None:
    text = """@id("ok") permit (principal, action, resource);

@id("broken")
permit (principal, action, resource) when { context.args. };
"""
    problem = only(problems(guard, {"p.cedar": text}))
    assert (problem.line, problem.policy_id) == (3, "broken")
    assert problem.message.startswith("syntax error:")


def test_every_problem_in_every_file_is_listed(guard: Guard) -> None:
    found = problems(
        guard,
        {
            "a.cedar": 'permit (principal, action == Action::"nope", resource);',
            "b/c.cedar": '\n@id("x") permit (principal, action, resource)'
            ' when { principal.knd == "a" };',
        },
    )
    assert [(p.file, p.line) for p in found] == [("a.cedar", 1), ("b/c.cedar", 2)]
    assert "did you mean `kind`?" in found[1].message


def test_duplicate_ids_are_refused(guard: Guard) -> None:
    text = (
        '@id("same") permit (principal, action, resource);\n'
        '@id("same") forbid (principal, action, resource);'
    )
    problem = only(problems(guard, {"p.cedar": text}))
    assert (
        problem.line == 2 and "duplicate @id" in problem.message and "p.cedar:1" in problem.message
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('@approval("admin") permit (principal, action, resource);', "belongs on a forbid"),
        ('@approval("admin") forbid (principal, action, resource);', "unless { context.approved }"),
        (
            '@approval("") forbid (principal, action, resource) unless { context.approved };',
            "needs the approver role",
        ),
        ('@aproval("admin") forbid (principal, action, resource);', "did you mean @approval?"),
        ('@mode("off") permit (principal, action, resource);', '"enforce" or "shadow"'),
        ('@reason("") permit (principal, action, resource);', "@reason is empty"),
        ("permit (principal == ?principal, action, resource);", "templates"),
    ],
)
def test_annotation_and_shape_rules(guard: Guard, text: str, fragment: str) -> None:
    assert fragment in only(problems(guard, {"p.cedar": text})).message


def test_other_annotations_are_allowed(guard: Guard) -> None:
    version = guard.activate_policies(
        "acme", {"p.cedar": '@owner("sec") permit (principal, action, resource);'}
    )
    assert version.startswith("sha256:")


def test_refused_bundle_leaves_the_active_one_in_force(guard: Guard) -> None:
    before = guard.store.workspace("acme")
    problems(guard, {"p.cedar": "permit (principal, action, resource) when { nope };"})
    after = guard.store.workspace("acme")
    assert before is not None and after is not None
    assert after.active_policy_version == before.active_policy_version


def test_version_is_a_content_hash(guard: Guard) -> None:
    files = {"p.cedar": "permit (principal, action, resource);"}
    first = guard.activate_policies("acme", files)
    assert guard.activate_policies("acme", dict(files)) == first
    assert (
        guard.activate_policies("acme", {"p.cedar": "permit (principal, action, resource);\n"})
        != first
    )


def test_statements_keep_their_lines_across_strings_and_comments() -> None:
    text = (
        'permit (principal, action, resource) when { "a;b//c" like "*" }; // x;\n'
        "\n"
        "// y;\n"
        "forbid (principal, action, resource);"
    )
    statements = split_statements("f.cedar", text)
    assert [s.line for s in statements] == [1, 4]
    assert statements[0].text.endswith('"*" };')


def test_empty_bundle_is_valid_and_denies_everything(guard: Guard) -> None:
    guard.activate_policies("acme", {})
    with guard.task(
        workspace="acme", agent="coder", user="u", request="r", tools=["send_email"]
    ) as task:
        d = task.authorize("send_email", {"to": "bob@acme.com"})
    assert (d.effect, d.reason) == (Effect.DENY, "no policy permits send_email for agent coder")


def test_a_policy_for_an_effect_no_tool_has_is_inert_until_one_does(guard: Guard) -> None:
    money = (
        '@id("cap") @reason("small payments only") forbid (principal, action in Action::"financial", resource)\n'
        'when { context.args.amount.greaterThan(decimal("10.0")) };'
    )
    guard.activate_policies(
        "acme", {"money.cedar": money, "ok.cedar": "permit (principal, action, resource);"}
    )
    bundle = guard.check_policies("acme", {"money.cedar": money})
    assert bundle.policies["cap"].inert
    assert all(not any(p.id == "cap" for p in policies) for policies in bundle.slices.values())
    # A financial tool without `amount` would break the policy: refused, nothing written.
    with pytest.raises(PolicyError, match=r"args\.amount"):
        guard.register_tool("acme", "pay", effects=["financial"], args_schema={"type": "object"})
    guard.register_tool(
        "acme",
        "pay",
        effects=["financial"],
        args_schema={
            "type": "object",
            "properties": {"amount": {"type": "number"}},
            "required": ["amount"],
        },
    )
    guard.grant("acme", user="a", agent="coder", tools=["pay"])
    with guard.task(workspace="acme", agent="coder", user="a", request="", tools=["pay"]) as task:
        assert task.authorize("pay", {"amount": 5}).allowed
        assert task.authorize("pay", {"amount": 50}).reasons[0].policy == "cap"


# Cedar's parser is recursive: past some 600 nested brackets it overflows the stack and the whole
# process dies. Each shape here, at that size, would crash the test run if it reached Cedar.
DEEP = {
    "brackets": "(" * 700 + "context.approved" + ")" * 700,
    "sets": "[" * 700 + "1" + "]" * 700 + " == [1]",
    "records": "{a: " * 700 + "1" + "}" * 700 + " == {a: 1}",
    "a chain of &&": " && ".join(["context.approved"] * 1400),
    "nested if": "if context.approved then " * 1400 + "true" + " else false" * 1400,
    "a chain of lookups": "context" + '["a"]' * 1400 + " == 1",
}


@pytest.mark.parametrize("shape", sorted(DEEP))
def test_statements_too_deep_for_cedar_are_refused_before_it_parses_them(
    guard: Guard, shape: str
) -> None:
    text = f'@id("deep")\npermit (principal, action, resource) when {{ {DEEP[shape]} }};'
    found = only(problems(guard, {"deep.cedar": "// deep\n" + text}))
    assert (found.file, found.line, found.policy_id) == ("deep.cedar", 2, "deep")
    assert found.message.startswith("too complex for Cedar's parser: ")


def test_nesting_limits_leave_real_policies_and_strings_alone(guard: Guard) -> None:
    wide = " || ".join(f'context.args.to == "user{i}@acme.com"' for i in range(90))
    guard.activate_policies(
        "acme",
        {
            "p.cedar": 'permit (principal, action == Action::"send_email", resource) '
            f'when {{ ({wide}) && context.args.to != "{"(" * 500}" }};'
        },
    )
    with guard.task(
        workspace="acme", agent="coder", user="u", request="r", tools=["send_email"]
    ) as t:
        assert t.authorize("send_email", {"to": "user7@acme.com"}).allowed
        assert not t.authorize("send_email", {"to": "user90@acme.com"}).allowed
