from . import apicenter_setup
