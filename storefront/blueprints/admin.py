"""TODO-admin"""

from quart import Blueprint

blueprint = Blueprint("admin", __name__)
