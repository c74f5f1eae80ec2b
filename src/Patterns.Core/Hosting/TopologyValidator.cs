using Microsoft.Extensions.Options;
using Patterns.Messaging;
using Patterns.Queues;
using Patterns.RequestResponse;
using Patterns.Resilience;
using Patterns.Transport;

namespace Patterns.Hosting;

[OptionsValidator]
internal sealed partial class ConsumerOptionsDataValidator : IValidateOptions<ConsumerOptions>;

[OptionsValidator]
internal sealed partial class QueueOptionsDataValidator : IValidateOptions<QueueOptions>;

[OptionsValidator]
internal sealed partial class RequestHandlerOptionsDataValidator : IValidateOptions<RequestHandlerOptions>;

[OptionsValidator]
internal sealed partial class RequestResponseOptionsDataValidator : IValidateOptions<RequestResponseOptions>;

/// <summary>Checks every registration at host start and reports every problem at once.</summary>
internal sealed class TopologyValidator : IValidateOptions<MessagingTopology>
{
    public ValidateOptionsResult Validate(string? name, MessagingTopology options)
    {
        var errors = new List<string>();
        var queueNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var queue in options.Queues)
        {
            if (string.IsNullOrWhiteSpace(queue.Name))
            {
                errors.Add("A queue has an empty name.");
                continue;
            }

            AddFailures(errors, $"Queue '{queue.Name}'", new QueueOptionsDataValidator().Validate(queue.Name, queue.Options));
            queueNames.Add(queue.Name);
        }

        var groups = new Dictionary<string, ConsumerRegistration>(StringComparer.Ordinal);
        foreach (var consumer in options.Consumers)
        {
            var what = consumer.Describe();
            if (consumer.Kind == AddressKind.Topic)
            {
                if (TopicPattern.Validate(consumer.Address, allowWildcards: true) is { } problem)
                {
                    errors.Add($"{what}: {problem}");
                }
            }
            else if (string.IsNullOrWhiteSpace(consumer.Address))
            {
                errors.Add($"{what}: the queue name is empty.");
            }

            // Named by the options type, as for every other handler: the group is already in `what`.
            var optionsValid = AddFailures(errors, what, new ConsumerOptionsDataValidator().Validate(null, consumer.Options));
            if (consumer.Options.RedeliveryDelay < TimeSpan.Zero)
            {
                errors.Add($"{what}: RedeliveryDelay must not be negative (was {consumer.Options.RedeliveryDelay}).");
            }

            if (consumer.Options.ConsumerGroup is { } group && string.IsNullOrWhiteSpace(group))
            {
                errors.Add($"{what}: ConsumerGroup must not be blank.");
            }

            ValidateResilience(errors, what, consumer.Options, optionsValid);
            if (groups.TryGetValue(consumer.ConsumerGroup, out var other))
            {
                if (consumer.Kind == AddressKind.Topic && other.Kind == AddressKind.Topic
                    && consumer.Options.ConsumerGroup is null && other.Options.ConsumerGroup is null
                    && (consumer.HandlerType is null || consumer.HandlerType != other.HandlerType))
                {
                    // Default group names use the handler's short name (or "delegate<T>"), so two different handlers can
                    // end up in one group and split its messages instead of each receiving every one.
                    errors.Add(
                        $"{what}: its default consumer group '{consumer.ConsumerGroup}' is also the default group of {other.Describe()}, " +
                        $"so {consumer.HandlerFullName} and {other.HandlerFullName} would compete for the topic's messages instead of each receiving every one. " +
                        "Set ConsumerOptions.ConsumerGroup on at least one of them.");
                }
                else if (other.Kind != consumer.Kind || !string.Equals(other.Address, consumer.Address, StringComparison.Ordinal))
                {
                    errors.Add($"{what}: consumer group '{consumer.ConsumerGroup}' is also used by {other.Describe()}; one group consumes from one address.");
                }
                else if (other.MessageType != consumer.MessageType)
                {
                    errors.Add($"{what}: consumer group '{consumer.ConsumerGroup}' also handles '{other.MessageType.FullName}'; competing consumers in one group must handle the same message type.");
                }
            }
            else
            {
                groups.Add(consumer.ConsumerGroup, consumer);
            }
        }

        var requestTypes = new Dictionary<Type, RequestHandlerRegistration>();
        foreach (var handler in options.RequestHandlers)
        {
            var what = $"Request handler {handler.HandlerName} for '{handler.RequestType.FullName}'";
            if (!requestTypes.TryAdd(handler.RequestType, handler))
            {
                errors.Add($"{what}: request type '{handler.RequestType.FullName}' already has handler {requestTypes[handler.RequestType].HandlerName}; a request has exactly one handler.");
            }

            var optionsValid = AddFailures(errors, what, new RequestHandlerOptionsDataValidator().Validate(null, handler.Options));
            ValidateResilience(errors, what, handler.Options, optionsValid);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Checks the resilience options, building the pipeline once to let Polly check its own.</summary>
    /// <param name="errors">Where the problems go.</param>
    /// <param name="what">Names the handler in each problem.</param>
    /// <param name="options">The options.</param>
    /// <param name="optionsValid">
    /// Whether the options passed their data-annotation checks; when they did not, the pipeline is not built, since a value
    /// already reported (MaxConcurrentCalls of 0, say) would be reported again in the words of whatever refuses it.
    /// </param>
    internal static void ValidateResilience(List<string> errors, string what, HandlerResilienceOptions options, bool optionsValid)
    {
        if (options.AttemptTimeout is { } timeout && timeout <= TimeSpan.Zero)
        {
            errors.Add($"{what}: AttemptTimeout must be positive (was {timeout}).");
            return;
        }

        if (!optionsValid)
        {
            return;
        }

        try
        {
            // Polly validates its own options as the pipeline is built.
            _ = PipelineFactory.Create(options, TimeProvider.System);
        }
        catch (System.ComponentModel.DataAnnotations.ValidationException ex)
        {
            errors.Add($"{what}: {ex.Message.ReplaceLineEndings(" ")}");
        }
        catch (ArgumentException ex)
        {
            // ArgumentOutOfRangeException puts its actual value on a line of its own.
            errors.Add($"{what}: {ex.Message.ReplaceLineEndings(" ")}");
        }
    }

    /// <summary>Adds the failures of <paramref name="result"/>, each prefixed by <paramref name="what"/>.</summary>
    /// <returns><see langword="true"/> when <paramref name="result"/> did not fail.</returns>
    internal static bool AddFailures(List<string> errors, string what, ValidateOptionsResult result)
    {
        if (result.Failed)
        {
            foreach (var failure in result.Failures ?? [])
            {
                errors.Add($"{what}: {failure}");
            }
        }

        return !result.Failed;
    }
}

/// <summary>Validates <see cref="PatternsOptions"/>.</summary>
internal sealed class PatternsOptionsValidator : IValidateOptions<PatternsOptions>
{
    public ValidateOptionsResult Validate(string? name, PatternsOptions options)
    {
        var errors = new List<string>();
        if (options.ShutdownTimeout < TimeSpan.Zero)
        {
            errors.Add($"PatternsOptions.ShutdownTimeout must not be negative (was {options.ShutdownTimeout}).");
        }

        if (options.InboxRetention <= TimeSpan.Zero && options.InboxRetention != Timeout.InfiniteTimeSpan)
        {
            errors.Add($"PatternsOptions.InboxRetention must be positive or Timeout.InfiniteTimeSpan (was {options.InboxRetention}).");
        }

        if (options.InboxCapacity < 1)
        {
            errors.Add($"PatternsOptions.InboxCapacity must be at least 1 (was {options.InboxCapacity}).");
        }

        if (options.InboxRetryDelay <= TimeSpan.Zero)
        {
            errors.Add($"PatternsOptions.InboxRetryDelay must be positive (was {options.InboxRetryDelay}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Validates <see cref="RequestResponseOptions"/>.</summary>
internal sealed class RequestResponseOptionsValidator : IValidateOptions<RequestResponseOptions>
{
    public ValidateOptionsResult Validate(string? name, RequestResponseOptions options)
    {
        var errors = new List<string>();
        if ((options.DefaultTimeout <= TimeSpan.Zero || options.DefaultTimeout > RequestResponseOptions.MaxTimeout)
            && options.DefaultTimeout != Timeout.InfiniteTimeSpan)
        {
            errors.Add($"RequestResponseOptions.DefaultTimeout: {RequestResponseOptions.TimeoutRangeMessage} (was {options.DefaultTimeout}).");
        }

        if (string.IsNullOrWhiteSpace(options.RequestQueuePrefix))
        {
            errors.Add("RequestResponseOptions.RequestQueuePrefix must not be empty.");
        }

        var data = new RequestResponseOptionsDataValidator().Validate(name, options);
        if (data.Failed)
        {
            errors.AddRange(data.Failures ?? []);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

[OptionsValidator]
internal sealed partial class InMemoryTransportOptionsValidator : IValidateOptions<Patterns.InMemory.InMemoryTransportOptions>;
