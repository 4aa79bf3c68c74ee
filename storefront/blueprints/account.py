"""TODO-account"""

from quart import Blueprint

blueprint = Blueprint("account", __name__)
