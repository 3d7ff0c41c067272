"""Object storage: MinIO/S3 through the minio SDK in production and tests, a local folder embedded.

Keys are plain strings like `uploads/<sha256>` or `results/<job_id>/labels.tif`. Writes are
whole-object and atomic in both backends, so a reader never sees half an object.
"""
from __future__ import annotations

import io
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Protocol

from shared.infra.settings import Settings, get_settings
from shared.infra.private import private_dir


class StorageUnavailable(RuntimeError):
    """The object store cannot be reached right now; the caller may retry later."""


class ObjectNotFound(KeyError):
    pass


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def ping(self) -> None: ...


class LocalStore:
    def __init__(self, root: Path):
        self.root = private_dir(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"bad object key {key!r}")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        private_dir(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if p.is_file() and not p.name.startswith(".tmp-") and str(p.relative_to(self.root)).startswith(prefix))

    def ping(self) -> None:
        if not self.root.is_dir():
            raise StorageUnavailable(f"object folder {self.root} is missing")


class S3Store:
    def __init__(self, settings: Settings):
        import urllib3
        from minio import Minio

        # Short timeouts and no SDK-level retry storm: callers decide how to retry.
        http = urllib3.PoolManager(maxsize=16, timeout=urllib3.Timeout(connect=3, read=20),
                                   retries=urllib3.Retry(total=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
        self.client = Minio(settings.s3_endpoint, access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                            secure=settings.s3_secure, region=settings.s3_region, http_client=http)
        self.bucket = settings.s3_bucket

    def _call(self, fn, *args, **kwargs):
        from minio.error import S3Error
        import urllib3.exceptions

        try:
            return fn(*args, **kwargs)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject"):
                raise ObjectNotFound(args[1] if len(args) > 1 else "") from exc
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise StorageUnavailable(f"object store unreachable: {exc}") from exc

    def ensure_bucket(self) -> None:
        if not self._call(self.client.bucket_exists, self.bucket):
            self._call(self.client.make_bucket, self.bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._call(self.client.put_object, self.bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def get(self, key: str) -> bytes:
        def read():
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        try:
            return self._call(read)
        except ObjectNotFound:
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        try:
            self._call(self.client.stat_object, self.bucket, key)
            return True
        except ObjectNotFound:
            return False

    def delete(self, key: str) -> None:
        self._call(self.client.remove_object, self.bucket, key)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(o.object_name for o in self._call(
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))))

    def ping(self) -> None:
        self._call(self.client.bucket_exists, self.bucket)


def make_store(settings: Settings) -> ObjectStore:
    if settings.s3_endpoint:
        store = S3Store(settings)
        return store
    return LocalStore(settings.objects_folder)


@lru_cache(maxsize=1)
def get_store() -> ObjectStore:
    return make_store(get_settings())
