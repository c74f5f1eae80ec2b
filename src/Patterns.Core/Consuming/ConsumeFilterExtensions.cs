using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Consuming;
using Patterns.Hosting;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers consume filters: middleware around every message handler of the application.</summary>
public static class ConsumeFilterExtensions
{
    /// <summary>Adds a consume filter, created once from the application's services. Filters run in the order they are added, the first outermost; adding the same type again changes nothing.</summary>
    /// <typeparam name="TFilter">The filter.</typeparam>
    /// <param name="builder">The Patterns builder.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder AddConsumeFilter<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TFilter>(this PatternsBuilder builder)
        where TFilter : class, IConsumeFilter
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IConsumeFilter, TFilter>());
        return builder;
    }

    /// <summary>Adds a consume filter instance. Filters run in the order they are added, the first outermost.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="filter">The filter.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder AddConsumeFilter(this PatternsBuilder builder, IConsumeFilter filter)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(filter);
        builder.Services.AddSingleton(filter);
        return builder;
    }

    /// <summary>Adds a consume filter written as a delegate. Filters run in the order they are added, the first outermost.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="filter">Handles a message, calling the given <see cref="ConsumeDelegate"/> to continue.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder AddConsumeFilter(this PatternsBuilder builder, Func<ConsumeContext, ConsumeDelegate, ValueTask> filter)
    {
        ArgumentNullException.ThrowIfNull(filter);
        return builder.AddConsumeFilter(new DelegateConsumeFilter(filter));
    }

    private sealed class DelegateConsumeFilter(Func<ConsumeContext, ConsumeDelegate, ValueTask> filter) : IConsumeFilter
    {
        public ValueTask InvokeAsync(ConsumeContext context, ConsumeDelegate next) => filter(context, next);
    }
}
