"""Settings for ``celery -A dagster_celery.app worker``: dagster_celery imports a module of this
name when it is on PYTHONPATH. The values are the executor's own (resources/executor.py), so the
workers and the runs that submit to them always agree."""

import os

from resources.executor import celery_settings

broker_url = os.environ["ASSAY_CELERY_BROKER"]
result_backend = os.environ.get("ASSAY_CELERY_BACKEND", "rpc://")
globals().update(celery_settings())
