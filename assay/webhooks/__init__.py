"""Webhooks: registry events sent, signed as MLflow signs them, to the URLs operators allow.

- :mod:`~assay.webhooks.events`: the event names (MLflow's and assay's own) and the payload
  each registry event becomes;
- :mod:`~assay.webhooks.signing`: MLflow's ``X-MLflow-Signature`` scheme;
- :mod:`~assay.webhooks.targets`: where a webhook may point (the credential host policy);
- :mod:`~assay.webhooks.secret_box`: the signing secret at rest;
- :mod:`~assay.webhooks.store`: webhooks, deliveries and attempts in the registry's database;
- :mod:`~assay.webhooks.delivery`: the sender and the worker that delivers, retries and logs.
"""
