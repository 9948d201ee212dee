# The service user first, so that the configuration can belong to its group.
getent group netsentry >/dev/null || groupadd --system netsentry
getent passwd netsentry >/dev/null || useradd --system --gid netsentry \
    --home-dir /var/lib/netsentry --no-create-home --shell /sbin/nologin \
    --comment "netsentry network integrity agent" netsentry
exit 0
