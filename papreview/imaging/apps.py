from django.apps import AppConfig


class ImagingConfig(AppConfig):
    name = "papreview.imaging"
    verbose_name = "Slide imaging (Deep Zoom tiles, cell crops)"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from papreview.cases.models import Slide
        from papreview.imaging.selectors import slide_facts_forget

        post_save.connect(slide_facts_forget, sender=Slide, dispatch_uid="papreview-tile-facts")
        post_delete.connect(slide_facts_forget, sender=Slide, dispatch_uid="papreview-tile-facts-d")
