namespace Patterns.Consuming;

/// <summary>
/// Middleware around every message handler (pub/sub subscriptions and queue consumers): logging, a tenant taken from a
/// header, validation, exception mapping. Registered once for the application with
/// <c>AddConsumeFilter</c> on the Patterns builder; filters run in the order they were registered, the first outermost.
/// </summary>
/// <remarks>
/// <para>
/// A filter calls <c>next(context)</c> to go on to the next filter and finally the handler, or returns without calling
/// it to skip the handler (the message is then acknowledged). What it throws, or lets through from <c>next</c>, is a
/// handler failure: retried by the consumer's retry pipeline and then dead-lettered, with that exception recorded. So a
/// filter maps exceptions by catching one and throwing another.
/// </para>
/// <para>
/// Filters are singletons, called concurrently for different messages: keep per-message state in the
/// <see cref="ConsumeContext"/>. They run around each attempt of the handler, inside the consumer's retries. With no filter
/// registered, handlers are called directly, at no cost.
/// </para>
/// </remarks>
public interface IConsumeFilter
{
    /// <summary>Handles one message, calling <paramref name="next"/> to continue.</summary>
    /// <param name="context">The message and where it came from.</param>
    /// <param name="next">The rest of the pipeline: the next filter, and finally the handler.</param>
    /// <returns>A task that completes when the message is handled.</returns>
    ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next);
}

/// <summary>The rest of a consume pipeline, as a filter sees it.</summary>
/// <param name="context">The context to pass on (the one the filter received).</param>
/// <returns>A task that completes when the rest of the pipeline has handled the message.</returns>
public delegate ValueTask ConsumeDelegate(ConsumeContext context);
