"""The lab: network namespaces, real daemons in them, traffic and the demo. Root only; the daemon never imports it."""
