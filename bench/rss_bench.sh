#!/bin/sh
# Peak RSS and rows/s of `sr-platform load FILE` into a fresh migrated database.
#   sh bench/rss_bench.sh /tmp/big1m.csv
set -e
name=srrss_$(date +%s%N | tail -c 9)
url=$(python -c "
from sr_platform.core import db, migrate
server = db.database_url('postgres'); db.ensure_database(server, '$name')
url = db.with_database(server, '$name'); migrate.upgrade(url); print(url)")
SR_PLATFORM_DATABASE_URL=$url /usr/bin/time -v sr-platform load "$1" 2>&1 \
  | grep -E "^total|Maximum resident|Elapsed|^  +[0-9]" || true
python -c "
from sr_platform.core import db
db.drop_database(db.database_url('postgres'), '$name')"
