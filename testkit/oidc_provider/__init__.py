"""A small OpenID Connect provider for the single sign-on tests: a Django project of its own
(django-oauth-toolkit), run as a separate process on loopback (`python -m testkit.oidc_provider`).
It stands in for a hospital's identity provider; the app never imports it."""
