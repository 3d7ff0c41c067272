"""The audit every fault test ends with: the job table, the result rows and the object store agree.

- every uploaded image has exactly one job, and every upload the client saw accepted has an image;
- every job ends `done` or `failed` (open jobs allowed only while a run is still going);
- a `done` job has exactly one result, a `failed` one none, and no job has more than one;
- every result has exactly `count` nuclei rows; no nuclei rows without a result;
- every result's objects exist; no objects under results/<job_id>/ without a result row, except for
  jobs still open (an attempt may have written them before it was interrupted);
- no object under uploads/ without an image row (the bytes of a refused upload are not kept).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class AuditReport:
    images: int = 0
    jobs: Counter = field(default_factory=Counter)
    results: int = 0
    nuclei: int = 0
    upload_objects: int = 0
    result_objects: int = 0
    max_attempts: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        states = ", ".join(f"{k} {v}" for k, v in sorted(self.jobs.items()))
        return (f"images {self.images}; jobs: {states or 'none'}; results {self.results}; nuclei {self.nuclei}; "
                f"objects: uploads {self.upload_objects}, results {self.result_objects}; "
                f"max attempts {self.max_attempts}; problems {len(self.problems)}")

    def assert_clean(self) -> "AuditReport":
        assert self.ok, "audit failed: " + self.summary() + "\n  " + "\n  ".join(self.problems[:40])
        return self


def audit(database_url: str, store, accepted_sha256: set[str] | None = None, allow_open: bool = False,
          check_objects: bool = True) -> AuditReport:
    """Audit a whole instance (database + object store). `accepted_sha256`: the uploads a client saw
    accepted (2xx), each of which must have an image row."""
    from sqlalchemy import func, select

    from shared.infra.db.tables import Image, Job, Nucleus, Result
    from shared.infra.db.session import session_scope

    report = AuditReport()
    problems = report.problems
    with session_scope(database_url) as session:
        images = dict(session.execute(select(Image.id, Image.sha256)).all())
        jobs = session.execute(select(Job.id, Job.image_id, Job.status, Job.attempts, Job.error)).all()
        results = session.execute(select(Result.id, Result.job_id, Result.image_id, Result.count, Result.labels_key,
                                         Result.overlay_key, Result.nuclei_csv_key)).all()
        nuclei_per_result = dict(session.execute(select(Nucleus.result_id, func.count())
                                                 .group_by(Nucleus.result_id)).all())
    report.images, report.results = len(images), len(results)
    report.nuclei = sum(nuclei_per_result.values())

    jobs_per_image = Counter(job.image_id for job in jobs)
    for image_id in images:
        if jobs_per_image[image_id] != 1:
            problems.append(f"image {image_id} has {jobs_per_image[image_id]} jobs")
    for image_id in set(jobs_per_image) - set(images):
        problems.append(f"job(s) for unknown image {image_id}")
    if accepted_sha256 is not None:
        missing = accepted_sha256 - set(images.values())
        problems += [f"accepted upload {sha[:12]} has no image row" for sha in sorted(missing)]

    results_per_job = Counter(r.job_id for r in results)
    job_by_id = {job.id: job for job in jobs}
    open_jobs = set()
    for job in jobs:
        state = job.status.value
        report.jobs[state] += 1
        report.max_attempts = max(report.max_attempts, job.attempts or 0)
        n = results_per_job[job.id]
        if state in ("queued", "running"):
            open_jobs.add(job.id)
            if not allow_open:
                problems.append(f"job {job.id} still {state} (attempts {job.attempts}, error {job.error!r})")
            if n:
                problems.append(f"open job {job.id} already has {n} result(s)")
        elif state == "done" and n != 1:
            problems.append(f"done job {job.id} has {n} results")
        elif state == "failed" and n:
            problems.append(f"failed job {job.id} has {n} result(s)")
        if state == "failed" and not (job.error or "").strip():
            problems.append(f"failed job {job.id} has no reason")
    for r in results:
        job = job_by_id.get(r.job_id)
        if job is None:
            problems.append(f"result {r.id} belongs to no job")
        elif job.image_id != r.image_id:
            problems.append(f"result {r.id} names image {r.image_id}, its job image {job.image_id}")
        if nuclei_per_result.get(r.id, 0) != r.count:
            problems.append(f"result {r.id} counts {r.count} nuclei but has {nuclei_per_result.get(r.id, 0)} rows")
    result_ids = {r.id for r in results}
    for result_id in set(nuclei_per_result) - result_ids:
        problems.append(f"{nuclei_per_result[result_id]} nuclei rows without a result (result_id {result_id})")

    if check_objects:
        _audit_objects(store, report, images, results, open_jobs)
    return report


def _audit_objects(store, report: AuditReport, images: dict, results, open_jobs: set) -> None:
    upload_keys = store.list("uploads/")
    result_keys = store.list("results/")
    report.upload_objects, report.result_objects = len(upload_keys), len(result_keys)
    known_sha = set(images.values())
    for key in upload_keys:
        if key.removeprefix("uploads/") not in known_sha:
            report.problems.append(f"object {key} has no image row")
    referenced = {key for r in results for key in (r.labels_key, r.overlay_key, r.nuclei_csv_key)}
    present = set(result_keys)
    for key in sorted(referenced - present):
        report.problems.append(f"result object {key} is missing")
    jobs_with_results = {r.job_id for r in results}
    for key in sorted(present - referenced):
        job_id = key.split("/")[1] if key.count("/") >= 2 else ""
        if job_id in jobs_with_results or job_id in open_jobs:
            continue  # an extra file of a finished job would be odd but harmless; an open job's are expected
        report.problems.append(f"object {key} without a result row (job {job_id or '?'} is not open)")
