"""The compute agent never touches the database: not in its imports, not in its config."""

import subprocess
import sys


def test_agent_import_graph_has_no_database_layer():
    code = (
        "import sys, novalite.cli, novalite.agent.node, novalite_drivers.fake;"
        "bad = sorted(m for m in sys.modules if m.startswith(('novalite.db', 'novalite.store', 'sqlalchemy',"
        " 'asyncpg', 'aiosqlite', 'alembic', 'novalite.api', 'novalite.conductor', 'novalite.scheduler',"
        " 'novalite.console', 'novalite.node')));"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the agent imports database/control-plane modules: {out}"


def test_drivers_import_nothing_of_novalite():
    code = (
        "import sys, novalite_drivers.fake, novalite_drivers.base;"
        "print(','.join(sorted(m for m in sys.modules if m == 'novalite' or m.startswith('novalite.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_agent_refuses_a_database_url(tmp_path):
    env = {
        "NOVALITE_DATABASE_URL": "postgresql://x@127.0.0.1/db",
        "NOVALITE_TRANSPORT_URL": "rabbit://g:g@127.0.0.1/",
        "NOVALITE_STATE_DIR": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "novalite.cli", "agent", "--host", "hv9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to start with a database URL" in proc.stderr
