#!/usr/bin/env bash
# Install the real test peers, only what is missing (idempotent, fast on re-run):
#   apt: postfix (+ libsasl2-modules: SASL PLAIN/LOGIN for the smart-host test), swaks (+TLS/SASL/DNS perl libs), dig, knot, dnsperf, curl,
#        nginx-light and wrk (the tracking-server redirect figure, benches/src/bin/tracking.rs),
#        strace (the embedded log test that sees the data directory fsynced),
#        chromium and chromium-driver (the dashboard in a real browser, ops/tests/ui.rs)
#   pip: dkimpy, dnspython, cryptography, pynacl, standardwebhooks; check-jsonschema and PyYAML (the compose file
#        against the Compose Specification schema, the rendered Helm chart; ops/tests/deploy.rs)
#   go: helm (helm lint / helm template of ops/deploy/helm, from the Go module proxy) into ~/go/bin
#   pip: schemathesis (ops/tests/schemathesis.rs)
#   pip: selenium (drives Debian's chromedriver; ops/tests/ui/*.py)
#   Maven Central: Apache Kafka and Apache Cassandra jars into $HERALD_CACHE
# Env: HERALD_CACHE (default ~/.cache/herald), KAFKA_VERSION, CASSANDRA_VERSION.
set -euo pipefail

CACHE="${HERALD_CACHE:-$HOME/.cache/herald}"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.2}"
CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
LOG4J_VERSION="2.24.3"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

log() { printf '[install-peers] %s\n' "$*"; }

# ---- apt ---------------------------------------------------------------
APT_PKGS=(postfix libsasl2-modules swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
  libnet-dns-perl bind9-dnsutils knot knot-dnsutils dnsperf curl openssl prometheus nginx-light wrk strace
  chromium chromium-driver)

missing=()
for p in "${APT_PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Keep package scripts from starting daemons (postfix, knot) while installing.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    apt-get install -y --no-install-recommends "${missing[@]}"  # rerun loudly on failure
else
  log "apt: all ${#APT_PKGS[@]} packages present"
fi

# No system nginx may be left running (the benchmark runs its own instance).
if [[ -s /run/nginx.pid ]] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  log "nginx: stopping the system instance"
  nginx -s quit >/dev/null 2>&1 || true
fi

# No postfix master may be left running (we run our own instances in tests).
pidf=/var/spool/postfix/pid/master.pid
if [[ -s $pidf ]]; then
  pid="$(tr -d ' \n' <"$pidf")"
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    log "postfix: stopping system master (pid $pid)"
    postfix stop >/dev/null 2>&1 || kill "$pid" || true
  fi
fi

# ---- pip ---------------------------------------------------------------
if python3 -c "import dkim, dns, cryptography, nacl" 2>/dev/null; then
  log "pip: dkimpy dnspython cryptography pynacl present"
else
  log "pip: installing dkimpy dnspython cryptography pynacl"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore dkimpy dnspython cryptography pynacl
fi
python3 -c "import dkim, nacl"
# selenium: drives headless Chromium through Debian's chromedriver (ops/tests/ui.rs).
if python3 -c "import selenium" 2>/dev/null; then
  log "pip: selenium present"
else
  log "pip: installing selenium"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore selenium
fi
# standardwebhooks: an independent verifier of Herald's webhook signatures (ops/tests/webhooks.rs).
if python3 -c "import standardwebhooks" 2>/dev/null; then
  log "pip: standardwebhooks present"
else
  log "pip: installing standardwebhooks"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore standardwebhooks
fi
python3 -c "import standardwebhooks"
# schemathesis: fuzzes the REST API against /v1/openapi.json (ops/tests/schemathesis.rs).
if command -v st >/dev/null && st --version 2>/dev/null | grep -q "version 4"; then
  log "pip: schemathesis present"
else
  log "pip: installing schemathesis 4"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "schemathesis>=4,<5"
fi
if command -v check-jsonschema >/dev/null && python3 -c "import yaml" 2>/dev/null; then
  log "pip: check-jsonschema pyyaml present"
else
  log "pip: installing check-jsonschema pyyaml"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore check-jsonschema pyyaml
fi

# ---- go ----------------------------------------------------------------
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
if command -v helm >/dev/null || [[ -x "$HOME/go/bin/helm" ]]; then
  log "go: helm present"
elif command -v go >/dev/null; then
  log "go: installing helm $HELM_VERSION (go install, a few minutes)"
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
else
  log "go: no Go toolchain; install Go, then rerun for helm"
  exit 1
fi

# ---- Maven Central jars -------------------------------------------------
# fetch_jars NAME VERSION DEPENDENCY_XML: resolve into $CACHE/NAME/lib once per version.
fetch_jars() {
  local name="$1" version="$2" deps="$3" dir="$CACHE/$1"
  # The stamp covers the version and the dependency list, so editing either re-resolves.
  local stamp
  stamp="$version $(printf '%s' "$deps" | md5sum | cut -c1-12)"
  if [[ -f $dir/lib/.complete && "$(cat "$dir/lib/.complete")" == "$stamp" ]]; then
    log "$name: $version jars present in $dir/lib"
    return 0
  fi
  log "$name: resolving $version from Maven Central into $dir/lib"
  mkdir -p "$dir"
  cat >"$dir/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by ops/scripts/install-peers.sh; only used to fetch jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>herald.peers</groupId>
  <artifactId>$name-jars</artifactId>
  <version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
$deps
  </dependencies>
</project>
EOF
  rm -rf "${dir:?}/lib"
  mvn -q -B -Dstyle.color=never -f "$dir/pom.xml" -Dmaven.repo.local="$CACHE/m2" \
    "$DEP_PLUGIN:copy-dependencies" -DincludeScope=runtime -DoutputDirectory="$dir/lib" \
    >"$dir/mvn.log" 2>&1 || { cat "$dir/mvn.log" >&2; exit 1; }
  echo "$stamp" >"$dir/lib/.complete"
  log "$name: $(find "$dir/lib" -name '*.jar' | wc -l) jars"
}

dep() { printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version></dependency>\n' "$@"; }

# Kafka broker (kafka_2.13: kafka.Kafka, kafka.tools.StorageTool), CLI tools
# (org.apache.kafka.tools.*) and a log4j2 backend; Kafka 4.1 uses slf4j-api 1.7,
# so the binding must be log4j-slf4j-impl (not the slf4j2 one).
fetch_jars kafka "$KAFKA_VERSION" "$(
  dep org.apache.kafka kafka_2.13 "$KAFKA_VERSION"
  dep org.apache.kafka kafka-tools "$KAFKA_VERSION"
  dep org.apache.logging.log4j log4j-core "$LOG4J_VERSION"
  dep org.apache.logging.log4j log4j-slf4j-impl "$LOG4J_VERSION"
)"

# Cassandra server (brings logback as its slf4j backend).
fetch_jars cassandra "$CASSANDRA_VERSION" "$(
  dep org.apache.cassandra cassandra-all "$CASSANDRA_VERSION"
)"

log "done (cache: $CACHE)"
