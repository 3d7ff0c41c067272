"""The segmentation worker: a Celery consumer of the `segment` queue.

Run: `celery -A services.worker.app worker -Q segment --pool solo --concurrency 1 -n segment-<i>@%h`.
"""
