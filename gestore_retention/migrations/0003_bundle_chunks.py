from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('gestore_retention', '0002_job_retry'),
    ]

    operations = [
        migrations.AddField(
            model_name='bundle',
            name='chunks',
            field=models.JSONField(blank=True, default=dict, help_text='Owned records hashed per chunk of sorted keys ({size, owned: {label: [[first, last, n, sha256]]}}); a batched erase checks one chunk at a time. Empty for bundles made before it existed.'),
        ),
    ]
