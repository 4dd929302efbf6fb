"""tlslogd: follow a Postfix maillog, turn its TLS lines into typed events, correlate them with
the sessions and deliveries they belong to, and expose the result to Prometheus."""

__version__ = "0.1.0"
