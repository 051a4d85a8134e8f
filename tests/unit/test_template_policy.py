"""House policy on template.yaml: cfn-lint with the rules in lint/cfn_rules (which
`make validate` runs too), each rule shown to catch what it is for, and the functions'
environment agreeing with what the AWS composition root reads."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from cfnlint.api import ManualArgs, lint

from mxgate.adapters.aws.settings import AwsSettings
from tests.awsstack import TEMPLATE
from tests.support import REPO

TEXT = TEMPLATE.read_text()
RULES = str(REPO / "lint" / "cfn_rules")


def findings(template: str) -> list[tuple[str, str]]:
    config = ManualArgs(append_rules=[RULES], include_checks=["I"], regions=["us-east-1"])
    return [(match.rule.id, match.message) for match in lint(template, config=config)]


def test_the_template_is_clean_under_cfn_lint_and_the_house_rules():
    assert findings(TEXT) == []


def without_retention(logical_id: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        pattern = rf"(  {logical_id}:\n(?:    .*\n)*?)      RetentionInDays: .*\n"
        changed, count = re.subn(pattern, r"\1", text)
        assert count == 1
        return changed

    return edit


def renamed_log_group(text: str) -> str:
    return text.replace('"/aws/lambda/${QuarantineFunction}"', "/aws/lambda/elsewhere")


def without_rule_dead_letters(text: str) -> str:
    return text.replace(
        "            DeadLetterConfig:\n              Arn: !GetAtt UnstartedQueue.Arn\n", ""
    )


@pytest.mark.parametrize(
    ("edit", "rule", "says"),
    [
        (without_retention("DeliverLogGroup"), "E9001", "DeliverFunction sets no RetentionInDays"),
        (renamed_log_group, "E9001", "QuarantineFunction has no log group"),
        (without_retention("PipelineLogGroup"), "E9002", "PipelineLogGroup, which sets no"),
        (without_rule_dead_letters, "E9003", "MessageStored has no dead-letter queue"),
    ],
)
def test_each_house_rule_catches_its_case(edit, rule, says):
    found = [(r, m) for r, m in findings(edit(TEXT)) if r.startswith("E9")]
    assert len(found) == 1
    assert found[0][0] == rule
    assert says in found[0][1]


def test_the_functions_environment_is_what_the_composition_root_reads():
    """Each MXGATE_* variable the template sets is read by AwsSettings, and each setting
    without a default is set by the template."""
    set_by_template = set(re.findall(r"^        (MXGATE_\w+):", TEXT, flags=re.MULTILINE))
    read = set(
        re.findall(
            r'"(MXGATE_\w+)"', (REPO / "layers/core/mxgate/adapters/aws/settings.py").read_text()
        )
    )
    assert set_by_template <= read
    required = {name for name, f in AwsSettings.model_fields.items() if f.is_required()}
    assert {f"MXGATE_{name.upper()}" for name in required} <= set_by_template


def test_alarms_watch_dead_letters_failed_executions_and_unstarted_messages():
    for alarm, watched in (
        ("DeadLetterAlarm", "!GetAtt DeadLetterQueue.QueueName"),
        ("FailedExecutionsAlarm", "ExecutionsFailed"),
        ("UnstartedAlarm", "!GetAtt UnstartedQueue.QueueName"),
    ):
        block = TEXT.split(f"\n  {alarm}:\n", 1)[1].split("\n\n", 1)[0]
        assert watched in block
        assert "AlarmActions: !If [AlarmEmailSet, [!Ref AlarmTopic], !Ref AWS::NoValue]" in block
