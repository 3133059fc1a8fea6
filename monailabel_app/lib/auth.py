"""The four MONAI Label roles as FastAPI dependencies, named once for every route this app adds.

The role names come from MONAI Label's own settings, so a site's RBAC configuration covers our routes too.
"""

from fastapi import Depends
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC

USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
REVIEWER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_REVIEWER))
ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
