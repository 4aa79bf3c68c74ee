"""TODO-checkout"""

from quart import Blueprint

blueprint = Blueprint("checkout", __name__)
