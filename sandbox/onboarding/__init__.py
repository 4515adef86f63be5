"""Data onboarding: zones, providers, loads into immutable versions, quality reports, issues.

The logic behind ``/v1/zones``, ``/v1/providers``, ``/v1/zones/{zone}/datasets/{id}/versions``,
``…/uploads``, ``/v1/datasets/{id}/quality``, ``/v1/datasets/{id}/issues`` and the ``veil``
commands alike (docs/onboarding.md). One module per concept:

- :mod:`~sandbox.onboarding.model`: the records and states (zone kinds, load and issue states,
  a problem document, a pending load) and the id rule;
- :mod:`~sandbox.onboarding.staff`: who is a dataset's staff (admin, operator, its provider);
- :mod:`~sandbox.onboarding.zones` and :mod:`~sandbox.onboarding.providers`: the registries;
- :mod:`~sandbox.onboarding.loads`: checking and running a load (with
  :mod:`~sandbox.onboarding.sources` and :mod:`~sandbox.onboarding.progress`);
- :mod:`~sandbox.onboarding.uploads`: files sent for a dataset's loads, whole or in chunks (with
  :mod:`~sandbox.onboarding.receiver`, which writes a request's bytes all or nothing);
- :mod:`~sandbox.onboarding.versions`: the versions of a dataset, rollback, quality reports;
- :mod:`~sandbox.onboarding.issues`: the feedback loop, and :mod:`~sandbox.onboarding.corrections`
  for the receipts a correction revokes;
- :mod:`~sandbox.onboarding.authority`: the operator's authorisation of a zone (scope, term,
  state) and its exit;
- :mod:`~sandbox.onboarding.services`: all of them built once, with the audit log, for a server
  or a CLI command.

Each call that acts for someone names its :class:`~sandbox.access.model.Actor`; each service
returns frozen dataclasses defined beside it, which ``sandbox/api/responses/onboarding.py``
turns into their wire form.
"""
