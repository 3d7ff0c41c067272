"""Upload rate limits: a token bucket per API token (a signed-in person counts as the token they
signed in with), refilled at `settings.upload_rate_per_minute` image files per minute and holding
at most one minute's worth, so a burst of that size passes and a steady stream is held to the rate.

The embedded default runs one API process, so the buckets live in that process. When the broker is
Redis (production, where several API processes may run) they live in Redis, updated atomically by a
Lua script on Redis's own clock, so every process shares them. If Redis cannot be reached the
limiter lets uploads through: a rate limit is no reason to refuse work while the broker is down
(the job table is the truth; the sweeper delivers later).
"""
from __future__ import annotations

import logging
import math
import threading
import time

from flask import current_app

from services.api.access import Principal
from services.api.errors import ApiError
from shared.config import Settings

log = logging.getLogger(__name__)

EXTENSION_KEY = "nucleus_upload_limiter"
REDIS_KEY = "nucleus:upload-rate:{}"
REDIS_TIMEOUT_SECONDS = 0.5


class LocalBuckets:
    """Token buckets in this process (thread-safe: gunicorn's threads share them)."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self.lock = threading.Lock()

    def take(self, key: str, n: int) -> float:
        """Take n tokens; 0 when they were there, else the seconds until they will be (nothing is taken)."""
        with self.lock:
            now = self.clock()
            tokens, when = self.buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - when) * self.per_second)
            if tokens >= n:
                self.buckets[key] = (tokens - n, now)
                return 0.0
            self.buckets[key] = (tokens, now)
            return (n - tokens) / self.per_second


# KEYS[1]: the bucket; ARGV: capacity, tokens per second, n. Returns the wait in seconds, as a string
# (Lua numbers come back from Redis as integers).
TAKE_SCRIPT = """
local capacity, rate, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'when')
local tokens = tonumber(state[1]) or capacity
local when = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - when) * rate)
local wait = 0
if tokens >= n then tokens = tokens - n else wait = (n - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'when', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return tostring(wait)
"""


class RedisBuckets:
    """The same buckets in Redis, shared by every API process."""

    def __init__(self, per_minute: int, url: str):
        import redis

        self.capacity = per_minute
        self.per_second = per_minute / 60.0
        self.client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                           socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        self.script = self.client.register_script(TAKE_SCRIPT)

    def take(self, key: str, n: int) -> float:
        import redis

        try:
            return float(self.script(keys=[REDIS_KEY.format(key)], args=[self.capacity, self.per_second, n]))
        except redis.RedisError as exc:
            log.warning("upload rate limit skipped, Redis is unreachable: %s", exc)
            return 0.0


def make_buckets(settings: Settings) -> LocalBuckets | RedisBuckets | None:
    if settings.upload_rate_per_minute <= 0:
        return None
    if settings.resolved_broker_url.startswith(("redis://", "rediss://")):
        return RedisBuckets(settings.upload_rate_per_minute, settings.resolved_broker_url)
    return LocalBuckets(settings.upload_rate_per_minute)


def check_upload_rate(principal: Principal, files: int) -> None:
    """Count `files` image files against the principal's bucket, or answer 429 with Retry-After."""
    settings: Settings = current_app.config["NUCLEUS_SETTINGS"]
    if EXTENSION_KEY not in current_app.extensions:
        current_app.extensions[EXTENSION_KEY] = make_buckets(settings)
    buckets = current_app.extensions[EXTENSION_KEY]
    if buckets is None or files == 0:
        return
    per_minute = settings.upload_rate_per_minute
    if files > per_minute:
        raise RateLimited(f"this request holds {files} files, more than the {per_minute} per minute allowed; "
                          "send fewer files per request", retry_after=60)
    wait = buckets.take(str(principal.token_id), files)
    if wait > 0:
        raise RateLimited(f"too many uploads: at most {per_minute} files per minute for this token; "
                          f"retry in {math.ceil(wait)} s", retry_after=wait)


class RateLimited(ApiError):
    def __init__(self, message: str, retry_after: float):
        super().__init__(429, "rate_limited", message)
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
