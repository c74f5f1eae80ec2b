using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Batching;

/// <summary>Every batcher and batch consumer registered through <see cref="BatchingBuilder"/>; validated at start and run by <see cref="BatchingHostedService"/>.</summary>
internal sealed class BatchingTopology
{
    public List<BatcherRegistration> Batchers { get; } = [];

    public List<BatchConsumerRegistration> Consumers { get; } = [];
}

internal sealed class BatcherRegistration
{
    public required string Name { get; init; }

    public required Type ItemType { get; init; }

    public required BatchOptions Options { get; init; }

    public required bool HasSizeFunction { get; init; }

    /// <summary>Resolves the batcher's singleton and returns how to complete it.</summary>
    public required Func<IServiceProvider, Func<CancellationToken, Task>> Resolve { get; init; }
}

internal sealed class BatchConsumerRegistration
{
    public required TransportAddress Address { get; init; }

    public required Type MessageType { get; init; }

    public required string HandlerName { get; init; }

    public required BatchConsumerOptions Options { get; init; }

    public required bool HasSizeFunction { get; init; }

    public required Func<BatchConsumerContext, IBatchConsumer> Create { get; init; }

    public string ConsumerGroup => Options.ConsumerGroup ?? (Address.Kind == AddressKind.Queue ? Address.Name : $"{Address.Name}:{HandlerName}");

    public string Describe() => $"batch consumer '{ConsumerGroup}' ({HandlerName} on {Address})";
}

internal sealed record BatchConsumerContext(IServiceProvider Services, MessageBus Bus, IMessageSerializer Serializer, ILogger Logger, string ConsumerGroup, ConsumerStop? Stop = null);

/// <summary>A running batch consumer, without its message type.</summary>
internal interface IBatchConsumer
{
    DeliveryHandler Handler { get; }

    void BeginDrain(CancellationToken drainDeadline);

    Task CompleteAsync(CancellationToken drainDeadline);
}

internal sealed class BatchConsumerAdapter<TMessage>(TransportBatchConsumer<TMessage> consumer) : IBatchConsumer
{
    public DeliveryHandler Handler => consumer.HandleAsync;

    public void BeginDrain(CancellationToken drainDeadline) => consumer.BeginDrain(drainDeadline);

    public Task CompleteAsync(CancellationToken drainDeadline) => consumer.CompleteAsync(drainDeadline);
}

/// <summary>Checks every batching registration at host start and reports every problem at once.</summary>
internal sealed class BatchingTopologyValidator : IValidateOptions<BatchingTopology>
{
    public ValidateOptionsResult Validate(string? name, BatchingTopology options)
    {
        var errors = new List<string>();
        var names = new HashSet<(Type, string)>();
        foreach (var batcher in options.Batchers)
        {
            var what = $"Batcher '{batcher.Name}' of '{batcher.ItemType.Name}'";
            if (!names.Add((batcher.ItemType, batcher.Name)))
            {
                errors.Add($"{what}: a batcher of this item type and name is already registered.");
            }

            errors.AddRange(BatchOptionsValidation.Validate(batcher.Options, what));
            if (batcher.Options.MaxSize is not null && !batcher.HasSizeFunction)
            {
                errors.Add($"{what}: MaxSize is set but no size function was given (sizeOf).");
            }
        }

        var groups = new HashSet<string>(StringComparer.Ordinal);
        foreach (var consumer in options.Consumers)
        {
            var what = consumer.Describe();
            if (consumer.Address.Kind == AddressKind.Topic)
            {
                if (TopicPattern.Validate(consumer.Address.Name, allowWildcards: true) is { } problem)
                {
                    errors.Add($"{what}: {problem}");
                }
            }
            else if (string.IsNullOrWhiteSpace(consumer.Address.Name))
            {
                errors.Add($"{what}: the queue name is empty.");
            }

            if (!groups.Add(consumer.ConsumerGroup))
            {
                errors.Add($"{what}: consumer group '{consumer.ConsumerGroup}' is used by another batch consumer; give each a ConsumerGroup of its own.");
            }

            if (consumer.Options.FullMode != BatchFullMode.Wait)
            {
                errors.Add($"{what}: FullMode must be Wait for a batch consumer; the transport's own buffer applies back-pressure.");
            }

            errors.AddRange(BatchOptionsValidation.Validate(consumer.Options, what));
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
