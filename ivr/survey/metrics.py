"""Survey counters on the server's ``/metrics`` registry (``crm_bridge.metrics.REGISTRY``).

``contact_surveys_offered_total{channel}``: surveys started with a customer (``post_call``, ``outbound``);
``contact_surveys_completed_total{channel}``: those that reached the end of the script. Completion rate =
completed / offered.
"""

from __future__ import annotations

from prometheus_client import Counter

from crm_bridge.metrics import REGISTRY

SURVEYS_OFFERED = Counter("contact_surveys_offered", "Surveys started with a customer, by channel", ["channel"],
                          registry=REGISTRY)
SURVEYS_COMPLETED = Counter("contact_surveys_completed", "Surveys answered to the end of the script, by channel",
                            ["channel"], registry=REGISTRY)
