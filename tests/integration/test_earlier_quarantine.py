"""Spool files an earlier version kept in `$MXGATE_HOME/quarantine/` (recipients quarantined
naming the file, no quarantine record) get their record on start: listed, shown and deleted
by `mxgate quarantine` like one quarantined now, the old file gone."""

from __future__ import annotations

import json

from mxgate.cli import main
from mxgate.local.bootstrap import Bootstrap
from mxgate.local.spool_quarantine import QUARANTINE_BUCKET
from mxgate.records import Outcome
from tests.worker_harness import RAW, accept, outcomes


def test_an_earlier_versions_quarantined_spool_files_get_their_records_on_start(worker, capsys):
    folder = worker.setup.dirs.home / "quarantine"
    folder.mkdir()
    spooled = accept(worker, "01EARLIER", ["alice@nutrition.co"])
    kept = spooled.rename(folder / spooled.name)  # as the earlier version kept it
    worker.records.quarantine(
        "01EARLIER", ["alice@nutrition.co"], "internal error: boom", kept_at=str(kept)
    )
    (folder / "01TORNOLD.msg").write_bytes(b'{"message_id": "01TORNOLD", "mail_fr')
    bootstrap = Bootstrap(worker.setup.settings, clock=worker.clock, given_setup=worker.setup)

    assert bootstrap.adopt_earlier_quarantine() == ["01EARLIER.msg", "01TORNOLD.msg"]
    assert list(folder.iterdir()) == []
    objects = worker.mail_manager.actions.objects
    assert objects.get(QUARANTINE_BUCKET, "spool/01EARLIER.msg") == RAW
    home = ["--home", str(worker.setup.dirs.home)]
    assert main(["quarantine", "list", "--json", *home]) == 0
    records = {r["quarantine_id"]: r for r in json.loads(capsys.readouterr().out)["quarantined"]}
    assert set(records) == {"01EARLIER", "01TORNOLD"}
    assert "internal error: boom" in json.dumps(records["01EARLIER"])
    assert "quarantine/01EARLIER.msg" in json.dumps(records["01EARLIER"])
    assert outcomes(worker, "01EARLIER") == {"alice@nutrition.co": Outcome.QUARANTINED}
    assert bootstrap.adopt_earlier_quarantine() == []  # once
    assert main(["quarantine", "delete", "01TORNOLD", *home]) == 0
    assert not objects.exists(QUARANTINE_BUCKET, "spool/01TORNOLD.msg")
