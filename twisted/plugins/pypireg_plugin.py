from twisted.application.service import ServiceMaker

pypireg = ServiceMaker(
    "pypireg", "pypireg.tap", "A self-hosted Python package registry.", "pypireg"
)
