"""The archive: every result file of a succeeded task, copied into pollhook's own storage
before the provider's URL dies, and shown to consumers with fresh links."""
