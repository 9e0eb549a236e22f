#!/usr/bin/env bash
# System tools oddstream needs besides Python: Python 3.11, Java 17 and Maven (the local
# Kafka broker runs from Maven-fetched jars), docker-compose (the compose file check),
# Chromium and ChromeDriver (the dashboard's browser test).
# Installs what is missing from Debian's packages when it can (root + apt-get); otherwise
# says exactly what to install and fails.
set -euo pipefail

missing=()
command -v python3.11 >/dev/null || missing+=(python3.11)
if command -v java >/dev/null; then
  major=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -1)
  [ "${major:-0}" -ge 17 ] || missing+=(openjdk-17-jre-headless)
else
  missing+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null || missing+=(maven)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
if command -v sudo >/dev/null && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with sudo apt-get"
  sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  exit 0
fi
echo "oddstream needs: ${missing[*]} (Debian package names). Install them and run make again." >&2
exit 1
