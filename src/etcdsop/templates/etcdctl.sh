# etcdctl environment for cluster ${cluster}, managed by etcdsop: local edits are overwritten
alias e="etcdctl"
alias em="etcdctl member"
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS="${endpoints}"
export ETCDCTL_CACERT=/etc/etcd/ca.crt
export ETCDCTL_CERT=/etc/etcd/server.crt
export ETCDCTL_KEY=/etc/etcd/server.key
# The password stays in a file readable by root and the etcd group only.
case "$$(id -un 2>/dev/null)" in
  root|${admin_user})
    if [ -r /etc/etcd/etcd.pass ]; then
      ETCDCTL_USER="root:$$(cat /etc/etcd/etcd.pass)"
      export ETCDCTL_USER
    fi
    ;;
esac
