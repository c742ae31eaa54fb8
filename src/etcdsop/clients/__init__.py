"""The etcd clients' side: Patroni and vip-manager on the PostgreSQL hosts.

Their configs (confedit: pure edits, comments kept), where Patroni's config and client
TLS really are (locate), one host's work (host), every host and the password window
(reload), when a password may change (password), and Patroni restarts under
maintenance mode (restart). `etcdsop reload` (ops/reload.py) composes them.
"""
