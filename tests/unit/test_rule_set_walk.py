"""The rule set walk: every matching rule runs in order, Drop and ReplaceRecipient change
who later rules see, AddHeader changes what they see, ActionFailurePolicy decides failures."""

from __future__ import annotations

from typing import Any

import pytest

from mxgate.errors import MxgateError, PermanentError, TransientError
from mxgate.mailmanager.addresses import StaticAddressBook
from mxgate.mailmanager.facts import MessageFacts
from mxgate.mailmanager.models import RuleAction, RuleSet
from mxgate.mailmanager.rules import ActionContext, PartialFailureError, run_rule_set

FACTS = MessageFacts(
    mail_from="s@shop.example", helo="mta.shop.example", source_ip="198.51.100.7", size=900
)
BOOK = StaticAddressBook()
ROLE = "arn:aws:iam::000000000000:role/MailManager"


class Recorder:
    """An executor that records each call; `fail` maps an action kind to an error or to the
    recipients it fails for."""

    def __init__(self, fail: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]]] = []
        self.variants: list[int] = []
        self.fail = fail or {}

    def execute(self, action: RuleAction, context: ActionContext) -> str:
        self.calls.append(
            (context.rule_name, action.kind, context.recipients, context.added_headers)
        )
        self.variants.append(context.variant)
        failure = self.fail.get(action.kind)
        if isinstance(failure, set):
            failed = {r: "refused" for r in context.recipients if r in failure}
            if failed:
                raise PartialFailureError(failed, transient=[r for r in failed if "4xx" in r])
        elif isinstance(failure, MxgateError):
            raise failure
        elif failure is not None:
            raise PermanentError(failure)
        return "done"


def rule(
    name: str, actions: list[dict[str, Any]], conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"Name": name, "Conditions": conditions or [], "Actions": actions}


def ends_with(suffix: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"Attribute": "RECIPIENT"},
            "Operator": "ENDS_WITH",
            "Values": [suffix],
        }
    }


def header_is(name: str, value: str) -> dict[str, Any]:
    return {
        "StringExpression": {
            "Evaluate": {"MimeHeaderAttribute": name},
            "Operator": "EQUALS",
            "Values": [value],
        }
    }


ARCHIVE = {"Archive": {"TargetArchive": "Archive"}}
RELAY = {"Relay": {"Relay": "Relay"}}
DROP: dict[str, Any] = {"Drop": {}}


def send(policy: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"RoleArn": ROLE}
    if policy:
        params["ActionFailurePolicy"] = policy
    return {"Send": params}


def walk(
    rules: list[dict[str, Any]],
    recipients: list[str],
    executor: Recorder,
    facts: MessageFacts = FACTS,
):
    return run_rule_set(RuleSet.model_validate({"Rules": rules}), facts, recipients, BOOK, executor)


def test_every_matching_rule_runs_in_order():
    executor = Recorder()
    outcome = walk(
        [
            rule("one", [ARCHIVE]),
            rule("two", [RELAY], [ends_with("@b.example")]),
            rule("three", [send()]),
        ],
        ["x@a.example", "y@b.example"],
        executor,
    )
    assert [(c[0], c[1], c[2]) for c in executor.calls] == [
        ("one", "Archive", ("x@a.example", "y@b.example")),
        ("two", "Relay", ("y@b.example",)),
        ("three", "Send", ("x@a.example", "y@b.example")),
    ]
    assert outcome.trail("y@b.example").matched_rules == ["one", "two", "three"]
    assert outcome.trail("x@a.example").matched_rules == ["one", "three"]
    assert [r.rule_index for r in outcome.records] == [0, 1, 2]


def test_drop_removes_only_the_matched_recipients_and_later_rules_do_not_see_them():
    executor = Recorder()
    outcome = walk(
        [
            rule("drop-b", [DROP, ARCHIVE], [ends_with("@b.example")]),
            rule("all", [ARCHIVE]),
        ],
        ["x@a.example", "y@b.example"],
        executor,
    )
    assert executor.calls == [("all", "Archive", ("x@a.example",), ())]  # not the dropped one,
    assert outcome.trail("y@b.example").dropped_by == "rule drop-b: Drop"  # not even in its rule
    assert outcome.trail("y@b.example").actions == ["Drop"]
    assert outcome.trail("x@a.example").dropped_by is None


def test_processing_stops_when_every_recipient_is_dropped():
    executor = Recorder()
    outcome = walk([rule("drop", [DROP]), rule("never", [ARCHIVE])], ["x@a.example"], executor)
    assert executor.calls == []
    assert [d.rule_name for d in outcome.trail("x@a.example").decisions] == ["drop"]


def test_add_header_is_seen_by_later_rules_and_actions():
    executor = Recorder()
    outcome = walk(
        [
            rule("loop-guard", [DROP], [header_is("X-Loop", "mxgate")]),
            rule("mark", [{"AddHeader": {"HeaderName": "X-Loop", "HeaderValue": "mxgate"}}]),
            rule("seen", [ARCHIVE], [header_is("X-Loop", "mxgate")]),
        ],
        ["x@a.example"],
        executor,
    )
    assert executor.calls == [("seen", "Archive", ("x@a.example",), (("X-Loop", "mxgate"),))]
    assert outcome.trail("x@a.example").matched_rules == ["mark", "seen"]


def test_add_header_applies_to_the_recipients_it_matched_only():
    executor = Recorder()
    walk(
        [
            rule(
                "tag-b",
                [{"AddHeader": {"HeaderName": "X-B", "HeaderValue": "1"}}],
                [ends_with("@b.example")],
            ),
            rule("all", [ARCHIVE]),
        ],
        ["x@a.example", "y@b.example"],
        executor,
    )
    # two messages differ now: the action runs once for each, and each is a numbered version
    assert executor.calls == [
        ("all", "Archive", ("x@a.example",), ()),
        ("all", "Archive", ("y@b.example",), (("X-B", "1"),)),
    ]
    assert executor.variants == [1, 2]


def test_an_action_whose_recipients_see_one_message_has_no_version_number():
    executor = Recorder()
    walk(
        [rule("mark", [{"AddHeader": {"HeaderName": "X-A", "HeaderValue": "1"}}, ARCHIVE])],
        ["x@a.example", "y@b.example"],
        executor,
    )
    assert executor.variants == [0]  # so a stored copy keeps the plain key


def test_replace_recipient_gives_later_actions_and_rules_the_new_addresses():
    executor = Recorder()
    outcome = walk(
        [
            rule(
                "rewrite",
                [{"ReplaceRecipient": {"ReplaceWith": ["p@b.example", "q@c.example"]}}, ARCHIVE],
                [ends_with("@a.example")],
            ),
            rule("b-only", [RELAY], [ends_with("@b.example")]),
        ],
        ["x@a.example"],
        executor,
    )
    assert executor.calls == [
        ("rewrite", "Archive", ("p@b.example", "q@c.example"), ()),
        ("b-only", "Relay", ("p@b.example",), ()),  # each new address is judged on its own
    ]
    trail = outcome.trail("x@a.example")
    assert [t.recipient for t in trail.replaced_with or []] == ["p@b.example", "q@c.example"]
    assert trail.replaced_by == "rewrite"
    final = [t for t in outcome.all_trails() if t.active]  # neither dropped nor replaced
    assert [t.recipient for t in final] == ["p@b.example", "q@c.example"]
    assert all(t.accepted == "x@a.example" for t in final)


@pytest.mark.parametrize(
    ("policy", "dropped"), [("CONTINUE", False), ("DROP", True), (None, False)]
)
def test_action_failure_policy(policy, dropped):
    executor = Recorder(fail={"Send": "SES said no"})
    outcome = walk(
        [rule("send", [send(policy), ARCHIVE]), rule("after", [RELAY])], ["x@a.example"], executor
    )
    failure = outcome.records[0]
    assert (failure.action_name, failure.action_status, failure.action_failure) == (
        "Send",
        "FAILURE",
        "SES said no",
    )
    ran = [c[1] for c in executor.calls]
    if dropped:  # DROP: the recipient is gone for the rest of the rule and the rule set
        assert ran == ["Send"]
        assert "ActionFailurePolicy DROP" in (outcome.trail("x@a.example").dropped_by or "")
    else:  # CONTINUE (and the default): the next actions and rules still run
        assert ran == ["Send", "Archive", "Relay"]
        assert outcome.trail("x@a.example").dropped_by is None


def test_a_partial_failure_fails_only_its_recipients():
    executor = Recorder(fail={"Send": {"y@b.example"}})
    outcome = walk(
        [rule("send", [send("DROP")]), rule("after", [ARCHIVE])],
        ["x@a.example", "y@b.example"],
        executor,
    )
    statuses = [(r.action_status, r.recipients_matched) for r in outcome.records[:2]]
    assert statuses == [("SUCCESS", ("x@a.example",)), ("FAILURE", ("y@b.example",))]
    assert outcome.trail("y@b.example").dropped_by is not None
    assert executor.calls[-1][:3] == ("after", "Archive", ("x@a.example",))


@pytest.mark.parametrize(
    ("error", "transient"),
    [(TransientError("451 4.3.0 later"), True), (PermanentError("550 5.1.1 no"), False)],
)
def test_a_failure_says_whether_it_may_pass(error, transient):
    outcome = walk([rule("send", [send()])], ["x@a.example"], Recorder(fail={"Send": error}))
    (record,) = outcome.records
    assert record.action_status == "FAILURE"
    assert record.transient == (("x@a.example",) if transient else ())
    assert "transient" not in record.as_log()  # the vended log keeps Mail Manager's shape


def test_a_partial_failure_says_which_recipients_may_pass():
    executor = Recorder(fail={"Send": {"4xx@b.example", "5xx@b.example"}})
    outcome = walk(
        [rule("send", [send()])], ["x@a.example", "4xx@b.example", "5xx@b.example"], executor
    )
    ok, failed = outcome.records
    assert (ok.action_status, ok.recipients_matched) == ("SUCCESS", ("x@a.example",))
    assert failed.recipients_matched == ("4xx@b.example", "5xx@b.example")
    assert failed.transient == ("4xx@b.example",)


def test_log_records_carry_the_vended_log_fields():
    outcome = walk([rule("a", [ARCHIVE])], ["x@a.example"], Recorder())
    assert outcome.records[0].as_log() == {
        "rule_name": "a",
        "rule_index": 0,
        "recipients_matched": ["x@a.example"],
        "action_name": "Archive",
        "action_index": 0,
        "action_status": "SUCCESS",
        "action_failure": "",
        "detail": "done",
    }


def test_unnamed_rules_are_labelled_by_index():
    outcome = walk([{"Actions": [ARCHIVE]}], ["x@a.example"], Recorder())
    assert outcome.records[0].rule_name == "rule-0"
