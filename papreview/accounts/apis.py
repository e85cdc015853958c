from django.contrib.auth.models import User
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle
from rest_framework.views import APIView

from papreview.accounts.roles import user_roles
from papreview.accounts.services import auth_token_obtain


class TokenObtainApi(APIView):
    """Exchange a username and password for an API token (`Authorization: Token <key>`)."""

    authentication_classes: list[type] = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle]  # slows down password guessing

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField()
        password = serializers.CharField(style={"input_type": "password"}, trim_whitespace=False)
        code = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=32,
            help_text="The two-factor code (authenticator app or a recovery code), when the "
            "account has two-factor sign-in.",
        )

        class Meta:
            ref_name = "TokenObtainInput"

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField(source="key")

        class Meta:
            ref_name = "TokenObtainOutput"

    @extend_schema(request=InputSerializer, responses={200: OutputSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = auth_token_obtain(**serializer.validated_data, request=request._request)
        return Response(self.OutputSerializer(token).data)


class MeApi(APIView):
    """Who is logged in, and their roles (also for an account with no role yet)."""

    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        roles = serializers.SerializerMethodField()

        class Meta:
            ref_name = "MeOutput"

        def get_roles(self, user: User) -> list[str]:
            return sorted(r.value for r in user_roles(user))

    @extend_schema(responses={200: OutputSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)
