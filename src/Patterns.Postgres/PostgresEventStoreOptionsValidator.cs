using Microsoft.Extensions.Options;

namespace Patterns.Postgres;

[OptionsValidator]
internal sealed partial class PostgresEventStoreOptionsDataValidator : IValidateOptions<PostgresEventStoreOptions>;

/// <summary>Validates <see cref="PostgresEventStoreOptions"/>, reporting every problem at once.</summary>
internal sealed class PostgresEventStoreOptionsValidator : IValidateOptions<PostgresEventStoreOptions>
{
    public ValidateOptionsResult Validate(string? name, PostgresEventStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = new List<string>();
        if (options.DataSource is null && string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            errors.Add("PostgresEventStoreOptions needs a ConnectionString or a DataSource.");
        }

        if (options.PollInterval <= TimeSpan.Zero)
        {
            errors.Add($"PostgresEventStoreOptions.PollInterval must be positive (was {options.PollInterval}).");
        }

        var data = new PostgresEventStoreOptionsDataValidator().Validate(name, options);
        if (data.Failed)
        {
            foreach (var failure in data.Failures ?? [])
            {
                errors.Add($"PostgresEventStoreOptions: {failure}");
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
