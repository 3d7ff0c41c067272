"""An admin activating the version of a run that awaited an admin records that decision on the run (who,
when, `activated_by_admin`), shown by the API and the models page; other runs and other projects' lines
are left as they were."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.api.model_versions import ACTIVATED_BY_ADMIN, AWAITING_ADMIN
from shared.infra.auth import get_or_create_project
from shared.infra.db.tables import JobStatus, ModelVersion, TrainingRun
from testkit.api import sign_in


def _awaiting_run(harness, project: str, version: str) -> str:
    key = f"models/{version}.pt"
    harness.store.put(key, b"weights")
    with harness.session() as session:
        pid = get_or_create_project(session, project).id
        session.add(ModelVersion(version=version, project_id=pid, object_key=key, sha256="0" * 64,
                                 metrics={"decision": AWAITING_ADMIN}))
        run = TrainingRun(status=JobStatus.done, project_id=pid, version=version, promoted=False,
                          metrics={"decision": AWAITING_ADMIN, "checks": [], "gate_passed": None})
        session.add(run)
        session.commit()
        return run.id


def test_activating_an_awaiting_runs_version_records_the_admins_decision(harness):
    run_id = _awaiting_run(harness, "waiting", "waiting-v1")
    other_id = _awaiting_run(harness, "waiting", "waiting-v2")
    token = harness.token("admin", name="dr-admin")
    admin = harness.client(token=token)

    elsewhere = admin.post("/api/v1/models/waiting-v1/activate", json={"project": "default"})
    assert elsewhere.status_code == 200, elsewhere.get_json()
    assert admin.get(f"/api/v1/training-runs/{run_id}").get_json()["decision"] == AWAITING_ADMIN  # not its line

    activated = admin.post("/api/v1/models/waiting-v1/activate", json={"project": "waiting"})
    assert activated.status_code == 200 and activated.get_json()["active"] is True
    run = admin.get(f"/api/v1/training-runs/{run_id}").get_json()
    assert run["decision"] == ACTIVATED_BY_ADMIN and run["promoted"] is False
    assert run["metrics"]["gate_decision"] == AWAITING_ADMIN and run["metrics"]["activated_by"] == "dr-admin"
    activated_at = datetime.fromisoformat(run["metrics"]["activated_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(timezone.utc) - activated_at) < timedelta(minutes=1)
    assert admin.get(f"/api/v1/training-runs/{other_id}").get_json()["decision"] == AWAITING_ADMIN

    again = admin.post("/api/v1/models/waiting-v1/activate", json={"project": "waiting"})  # a repeat changes nothing
    assert again.status_code == 200
    assert admin.get(f"/api/v1/training-runs/{run_id}").get_json()["metrics"] == run["metrics"]

    client, _csrf = sign_in(harness)
    html = client.get("/models?project=waiting").data.decode()
    assert 'data-decision="activated_by_admin"' in html and "activated by admin (dr-admin, " in html
    assert 'data-decision="awaiting_admin"' in html  # waiting-v2's run still offers its activation
