using System.Diagnostics.CodeAnalysis;
using Microsoft.Extensions.DependencyInjection;

namespace Patterns.Orchestration.Engine;

/// <summary>A registered workflow type: its name and how to create an instance of it.</summary>
internal sealed class WorkflowDefinition(string name, Type type, Func<IServiceProvider, WorkflowBase> factory)
{
    public string Name { get; } = name;

    public Type Type { get; } = type;

    /// <summary>Gets the signals, updates and queries declared at registration.</summary>
    public WorkflowRegistration Registration { get; } = new();

    /// <summary>Gets the <c>TInput</c> of the <see cref="Workflow{TInput, TResult}"/> the type derives from.</summary>
    public Type InputType => WorkflowArguments()[0];

    /// <summary>Gets the <c>TResult</c> of the <see cref="Workflow{TInput, TResult}"/> the type derives from.</summary>
    public Type ResultType => WorkflowArguments()[1];

    public WorkflowBase Create(IServiceProvider services) => factory(services);

    private Type[] WorkflowArguments()
    {
        for (var t = Type; t is not null; t = t.BaseType)
        {
            if (t.IsGenericType && t.GetGenericTypeDefinition() == typeof(Workflow<,>))
            {
                return t.GenericTypeArguments;
            }
        }

        throw new InvalidOperationException($"Workflow type {Type.Name} does not derive from Workflow<TInput, TResult>.");
    }

    public static WorkflowDefinition For<[DynamicallyAccessedMembers(DynamicallyAccessedMemberTypes.PublicConstructors)] TWorkflow>(string? name)
        where TWorkflow : WorkflowBase
    {
        var factory = ActivatorUtilities.CreateFactory<TWorkflow>([]);
        return new WorkflowDefinition(name ?? typeof(TWorkflow).Name, typeof(TWorkflow), sp => factory(sp, null));
    }
}
