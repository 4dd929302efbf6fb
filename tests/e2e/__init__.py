"""End-to-end suite: a real Postfix on loopback, tlslogd following its log, a real Prometheus."""
