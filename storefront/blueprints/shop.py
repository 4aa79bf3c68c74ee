"""TODO-shop"""

from quart import Blueprint

blueprint = Blueprint("shop", __name__)
