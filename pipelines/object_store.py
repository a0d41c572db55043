"""The object store's settings for pipeline tasks on a cluster: which Secret and ConfigMap, which keys.

Tasks that read or write object storage themselves (``object_store=True`` in
``pipelines/steps.py``) get the store's endpoint and keys as the AWS SDK's
standard environment variables. The names are the ones ``k8s/`` creates;
``tests/test_k8s.py`` checks that the two agree. Kept apart from submission
(``pipelines/submit.py``) because the DAG (``pipelines/compression.py``) needs
these settings and submission needs the DAG.
"""

from __future__ import annotations

from typing import Any

S3_SECRET = "shrink-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_CONFIG_MAP = "shrink-s3-config"
S3_CONFIG_KEYS = ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")


def use_object_store(task: Any) -> Any:
    """Give a task the object store's endpoint and keys as the AWS SDK's environment variables.

    The values come from the ConfigMap and Secret that ``k8s/`` creates, so no credential
    is ever written into the compiled pipeline. kfp.local ignores this (it uses the local env).
    """
    from kfp import kubernetes as k8s

    k8s.use_secret_as_env(task, secret_name=S3_SECRET, secret_key_to_env={k: k for k in S3_SECRET_KEYS})
    k8s.use_config_map_as_env(task, config_map_name=S3_CONFIG_MAP, config_map_key_to_env={k: k for k in S3_CONFIG_KEYS})
    return task
