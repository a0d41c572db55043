"""Where each task runs on a cluster: node pool, accelerator, resources, retries, caching.

Placement is compile-time: node selectors, tolerations and resources are
written into the pipeline's platform spec by kfp-kubernetes, so the compiled
YAML is a reviewable statement of where every step runs. kfp.local ignores
all of it and runs every task as a subprocess.
"""

from __future__ import annotations

from kfp import dsl
from kfp import kubernetes as k8s

from shrink.config import NodePool


def place(task: dsl.PipelineTask, pool: NodePool) -> dsl.PipelineTask:
    """Pin a task to a node pool with its tolerations, accelerator and resource envelope."""
    for key, value in sorted(pool.node_selector.items()):
        k8s.add_node_selector(task, label_key=key, label_value=value)
    for tol in pool.tolerations:
        k8s.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    if pool.accelerator_type and pool.accelerator_limit > 0:
        task.set_accelerator_type(pool.accelerator_type)
        task.set_accelerator_limit(pool.accelerator_limit)
    task.set_cpu_request(pool.cpu_request).set_cpu_limit(pool.cpu_limit)
    task.set_memory_request(pool.memory_request).set_memory_limit(pool.memory_limit)
    return task
