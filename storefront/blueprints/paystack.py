"""TODO-paystack"""

from quart import Blueprint

blueprint = Blueprint("paystack", __name__)
