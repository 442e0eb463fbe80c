from . import test_install
from . import test_security
from . import test_link
from . import test_cron
from . import test_purge
from . import test_run
from . import test_connection
from . import test_log_survives_rollback
