"""The training service: a Celery consumer of the `train` queue, separate from inference.

Run: `celery -A services.trainer.app worker -Q train --pool solo -n trainer@%h`.
"""
