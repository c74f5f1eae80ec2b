using Microsoft.Extensions.Options;
using Patterns.Hosting;

namespace Patterns.Batching;

[OptionsValidator]
internal sealed partial class BatchOptionsDataValidator : IValidateOptions<BatchOptions>;

[OptionsValidator]
internal sealed partial class BatchConsumerOptionsDataValidator : IValidateOptions<BatchConsumerOptions>;

/// <summary>Checks batch options and reports every problem at once.</summary>
internal static class BatchOptionsValidation
{
    public static List<string> Validate(BatchOptions options, string what)
    {
        var errors = new List<string>();
        var data = options is BatchConsumerOptions consumer
            ? new BatchConsumerOptionsDataValidator().Validate(null, consumer)
            : new BatchOptionsDataValidator().Validate(null, options);
        if (data.Failed)
        {
            foreach (var failure in data.Failures ?? [])
            {
                errors.Add($"{what}: {failure}");
            }
        }

        if (options.MaxAge <= TimeSpan.Zero && options.MaxAge != Timeout.InfiniteTimeSpan)
        {
            errors.Add($"{what}: MaxAge must be positive or Timeout.InfiniteTimeSpan (was {options.MaxAge}).");
        }

        if (options.Capacity < options.MaxCount)
        {
            errors.Add($"{what}: Capacity ({options.Capacity}) must be at least MaxCount ({options.MaxCount}), or a batch could never fill.");
        }

        if (options is BatchConsumerOptions { RedeliveryDelay: var delay } && delay < TimeSpan.Zero)
        {
            errors.Add($"{what}: RedeliveryDelay must not be negative (was {delay}).");
        }

        if (options is BatchConsumerOptions { ConsumerGroup: { } group } && string.IsNullOrWhiteSpace(group))
        {
            errors.Add($"{what}: ConsumerGroup must not be blank.");
        }

        TopologyValidator.ValidateResilience(errors, what, options, !data.Failed);
        return errors;
    }
}
