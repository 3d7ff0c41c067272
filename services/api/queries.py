"""Reading an experiment's history: per-image rows with their job and result, filtered and paged.
Used by the REST API and the web pages alike."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from flask import request
from sqlalchemy import Select, func, select, tuple_
from sqlalchemy.orm import Session, aliased

from services.api.errors import ApiError
from shared.infra.db.tables import Experiment, Image, Job, JobStatus, Nucleus, Result

MAX_PER_PAGE = 1000
MAX_PAGE = 1_000_000  # beyond any real listing; keeps the SQL offset inside a 64-bit integer
DEFAULT_PER_PAGE = 50
STREAM_BATCH = 10_000  # rows fetched at a time by exports and plots (a server-side cursor on PostgreSQL)

NUCLEUS_COLUMNS = ["label", "area", "perimeter", "centroid_x", "centroid_y", "equivalent_diameter", "eccentricity",
                   "solidity", "mean_intensity", "integrated_intensity"]


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def body(self, key: str, items: list, total: int) -> dict:
        """A list response as the contract shapes it: the list under a plural key, with paging."""
        return {key: items, "total": total, "page": self.page, "per_page": self.per_page}


def _positive_int(name: str, default: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ApiError(400, "invalid_query", f"{name} must be a whole number from 1, not {raw!r}")
    value = int(raw)
    if maximum is not None and value > maximum:
        raise ApiError(400, "invalid_query", f"{name} may be at most {maximum}")
    return value


def page_from_request(default_per_page: int = DEFAULT_PER_PAGE) -> Page:
    return Page(page=_positive_int("page", 1, MAX_PAGE), per_page=_positive_int("per_page", default_per_page, MAX_PER_PAGE))


SORTS = {"created": Image.created, "filename": Image.filename, "condition": Image.condition, "well": Image.well,
         "count": Result.count, "status": Job.status}


def _date_arg(name: str) -> str | None:
    raw = request.args.get(name) or None
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an ISO date such as 2026-03-01, not {raw!r}") from None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


@dataclass(frozen=True)
class ResultFilters:
    condition: str | None = None
    well: str | None = None
    status: str | None = None
    created_from: str | None = None  # inclusive, ISO 8601
    created_to: str | None = None  # exclusive
    sort: str | None = None  # a key of SORTS, "-" first for descending
    version: str | None = None  # each image's newest result made by this model version (default: its newest job)

    @classmethod
    def from_request(cls) -> "ResultFilters":
        status = request.args.get("status") or None
        if status is not None and status not in JobStatus.__members__:
            raise ApiError(400, "invalid_query", f"status must be one of {', '.join(JobStatus.__members__)}")
        sort = request.args.get("sort") or None
        if sort is not None and sort.lstrip("-") not in SORTS:
            raise ApiError(400, "invalid_query", f"sort must be one of {', '.join(SORTS)} (prefix - to reverse)")
        return cls(condition=request.args.get("condition") or None, well=request.args.get("well") or None,
                   status=status, created_from=_date_arg("created_from"), created_to=_date_arg("created_to"),
                   sort=sort, version=request.args.get("version") or None)

    @property
    def reads_jobs(self) -> bool:
        """Whether a filter reads the images' jobs or results (else the images alone decide which match)."""
        return self.status is not None or self.version is not None

    def order(self) -> list:
        if not self.sort:
            return [Image.created, Image.id]
        column = SORTS[self.sort.lstrip("-")]
        return [column.desc() if self.sort.startswith("-") else column.asc(), Image.created, Image.id]


def no_newer_job(version: str | None = None):
    """True for the outer query's Job when it is its image's newest job (an image has one per model version
    it was run with), or, with `version`, its newest job whose result that version made. Written as NOT
    EXISTS so the database can answer it for a whole experiment at once (an anti-join) as well as one image
    at a time through the jobs (image_id, created, id) index."""
    newer = aliased(Job)
    query = select(newer.id).where(newer.image_id == Job.image_id,
                                   tuple_(newer.created, newer.id) > tuple_(Job.created, Job.id))
    if version is not None:
        newer_result = aliased(Result)
        query = (query.join(newer_result, newer_result.job_id == newer.id)
                 .where(newer_result.model_version == version))
    return ~query.exists()


def join_history(query: Select, with_result: bool = False, version: str | None = None) -> Select:
    """Each image's current job (no_newer_job) and its result: the one place where the history, exports
    and plots meet jobs and results. The result is an outer join unless `with_result` or `version` (then
    images without one drop out)."""
    query = query.join(Job, Job.image_id == Image.id)
    if version is not None:
        query = query.join(Result, (Result.job_id == Job.id) & (Result.model_version == version))
    elif with_result:
        query = query.join(Result, Result.job_id == Job.id)
    else:
        query = query.outerjoin(Result, Result.job_id == Job.id)
    return query.where(no_newer_job(version))


def experiment_query(columns, experiment: Experiment, filters: ResultFilters, with_result: bool = False) -> Select:
    """`columns` of the experiment's images, joined to their jobs and results and filtered like the history."""
    query = (join_history(select(*columns).select_from(Image), with_result, filters.version)
             .where(Image.experiment_id == experiment.id))
    return apply_filters(query, filters)


def results_query(experiment: Experiment, filters: ResultFilters) -> Select:
    return experiment_query([Image, Job, Result], experiment, filters)


def apply_filters(query: Select, filters: ResultFilters) -> Select:
    """The history's filters on any query that joins Image and Job: one meaning for the table, the plots
    and the exports."""
    if filters.condition is not None:
        query = query.where(Image.condition == filters.condition)
    if filters.well is not None:
        query = query.where(Image.well == filters.well)
    if filters.status is not None:
        query = query.where(Job.status == JobStatus(filters.status))
    if filters.created_from is not None:
        query = query.where(Image.created >= datetime.fromisoformat(filters.created_from))
    if filters.created_to is not None:
        query = query.where(Image.created < datetime.fromisoformat(filters.created_to))
    return query


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes that were written as UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()


def result_row(image: Image, job: Job, result: Result | None) -> dict:
    return {
        "image_id": image.id, "job_id": job.id, "filename": image.filename, "condition": image.condition,
        "well": image.well, "plate": image.plate, "site": image.site, "channel": image.channel,
        "pixel_size_um": image.pixel_size_um, "width": image.width, "height": image.height,
        "status": job.status.value, "error": job.error,
        "count": result.count if result else None,
        "model_version": result.model_version if result else None,
        "area_mean": result.area_mean if result else None, "area_median": result.area_median if result else None,
        "area_min": result.area_min if result else None, "area_max": result.area_max if result else None,
        "created": iso(image.created), "extra": image.extra or {},
    }


def count_rows(session: Session, query: Select) -> int:
    return session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))


def _needs_jobs(filters: ResultFilters) -> bool:
    """Whether the filters or the order read a job or a result (else the images alone decide the rows)."""
    return filters.reads_jobs or (filters.sort is not None and filters.sort.lstrip("-") in ("count", "status"))


def page_of_results(session: Session, experiment: Experiment, filters: ResultFilters, page: Page) -> tuple[list[dict], int]:
    query = results_query(experiment, filters)
    # Every image has a job, so unless a filter or the order reads jobs or results, the images alone give
    # the total and the page's ids: an index-only walk of the experiment's images.
    choosing = query if _needs_jobs(filters) else apply_filters(
        select(Image.id).where(Image.experiment_id == experiment.id), filters)
    total = count_rows(session, choosing)
    # The page's image ids first, then whole rows for those ids only: a deep page does not load the rows it skips.
    page_ids = choosing.with_only_columns(Image.id).order_by(*filters.order()).offset(page.offset).limit(page.per_page)
    rows = session.execute(query.where(Image.id.in_(page_ids)).order_by(*filters.order())).all()
    return [result_row(*row) for row in rows], total


def nucleus_rows(session: Session, result: Result, limit: int | None = None) -> list[dict]:
    query = select(Nucleus).where(Nucleus.result_id == result.id).order_by(Nucleus.label)
    if limit is not None:
        query = query.limit(limit)
    return [{c: getattr(n, c) for c in NUCLEUS_COLUMNS} for n in session.scalars(query)]


@dataclass(frozen=True)
class Histogram:
    edges: list[float]  # len(counts) + 1 bin edges
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)


def _nucleus_query(columns, experiment: Experiment | None, result: Result | None,
                   filters: ResultFilters | None) -> Select:
    if result is not None:
        return select(*columns).where(Nucleus.result_id == result.id)
    query = experiment_query(columns, experiment, filters or ResultFilters(), with_result=True)
    return query.join(Nucleus, Nucleus.result_id == Result.id)


def _area_range(session: Session, experiment: Experiment | None, result: Result | None,
                filters: ResultFilters | None) -> tuple:
    """(nuclei, smallest area, largest area): of one result from its nuclei; of an experiment from its results'
    own counts and area summaries (one row per image instead of one per nucleus)."""
    if result is not None:
        return session.execute(select(func.count(Nucleus.id), func.min(Nucleus.area), func.max(Nucleus.area))
                               .where(Nucleus.result_id == result.id)).one()
    return session.execute(experiment_query([func.sum(Result.count), func.min(Result.area_min),
                                             func.max(Result.area_max)], experiment, filters or ResultFilters(),
                                            with_result=True)).one()


def area_histogram(session: Session, experiment: Experiment | None = None, result: Result | None = None,
                   filters: ResultFilters | None = None) -> Histogram:
    """Nucleus areas of one result or of an experiment's (filtered) images in bins, counted by the
    database (one pass over the nuclei whatever their number)."""
    n, low, high = _area_range(session, experiment, result, filters)
    if not n or low is None or high is None:
        return Histogram([], [])
    bins = min(60, max(10, int(n ** 0.5))) if high > low else 1
    width = (high - low) / bins or 1.0
    index = func.floor((Nucleus.area - low) / width)
    counts = [0] * bins
    for i, count in session.execute(_nucleus_query([index, func.count()], experiment, result, filters).group_by(index)):
        counts[max(0, min(int(i), bins - 1))] += count  # the largest area sits on the last edge
    return Histogram([low + i * width for i in range(bins + 1)], counts)


def counts_by_condition(session: Session, experiment: Experiment, filters: ResultFilters) -> dict[str, list[int]]:
    """Each condition's per-image nucleus counts, from the database's tally of images per (condition, count)."""
    query = (experiment_query([Image.condition, Result.count, func.count()], experiment, filters, with_result=True)
             .group_by(Image.condition, Result.count))
    groups: dict[str, list[int]] = {}
    for condition, count, images in session.execute(query):
        groups.setdefault(condition or "(none)", []).extend([count] * images)
    return groups


def mean_count_by_well(session: Session, experiment: Experiment, filters: ResultFilters) -> dict[str, float]:
    """Mean nuclei per image of each well, averaged by the database."""
    query = (experiment_query([Image.well, func.avg(Result.count)], experiment, filters, with_result=True)
             .where(Image.well.is_not(None)).group_by(Image.well))
    return {well: float(mean) for well, mean in session.execute(query)}


def result_for(session: Session, image: Image, version: str | None = None) -> tuple[Job | None, Result | None]:
    """The image's newest job and its newest result (made by `version` when given): while a re-segmentation
    runs, the result is still the earlier one."""
    job = session.scalars(select(Job).where(Job.image_id == image.id)
                          .order_by(Job.created.desc(), Job.id.desc()).limit(1)).first()
    results = select(Result).where(Result.image_id == image.id)
    if version is not None:
        results = results.where(Result.model_version == version)
    result = session.scalars(results.order_by(Result.id.desc()).limit(1)).first()
    return job, result
