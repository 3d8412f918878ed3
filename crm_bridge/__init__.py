"""CRM bridge: the customer store, contact history, call records and KPIs of the contact server.

Modules: ``models`` (SQLAlchemy schema), ``db`` (engines, ``Database`` thread-pool runner), ``migrate``
(``upgrade_database``), ``crm`` (``CrmAdapter`` protocol, value types, ``SqlCrmAdapter``), ``rest``
(``RestCrmAdapter``), ``external`` (``OutboxCrmAdapter``), ``outbox`` (durable delivery), ``recorder``
(``CallRecorder``), ``kpi``, ``masking``, ``security`` (argon2), ``seed`` (demo data).
"""
