#!/bin/sh
# Installs the lab image's Debian packages (packages.txt beside this script) unless all of them
# are installed already, as on the offline base image: build-base-image.sh runs this same script
# inside its debootstrapped root, and docker/Dockerfile runs it on top of whatever BASE is.
#
# No service is started (policy-rc.d) and no PostgreSQL cluster is created
# (create_main_cluster = false): Regent runs initdb itself.
set -eu
here=$(dirname "$0")
pkgs=$(sed -e 's/#.*//' "$here/packages.txt" | tr -s ' \n' ' ')

missing=
for p in $pkgs; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "install-packages: already installed: $pkgs"
    exit 0
fi
echo "install-packages: installing$missing"

export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
apt_get() {
    apt-get -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        -o APT::Install-Recommends=false -y "$@"
}
apt-get -q update
apt_get install postgresql-common
sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf
grep -qx 'create_main_cluster = false' /etc/postgresql-common/createcluster.conf
# shellcheck disable=SC2086 # word splitting is the point
apt_get install $missing
apt-get clean
rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d
