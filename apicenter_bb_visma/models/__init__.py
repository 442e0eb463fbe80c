from . import apicenter_integration
from . import apicenter_flow
from . import apicenter_run
from . import apicenter_log
from . import apicenter_link
from . import apicenter_mapping
from . import apicenter_value_map
from . import apicenter_document
